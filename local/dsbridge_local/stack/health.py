"""`dsbridge status`: each component as the supervisor reports it, Airflow's own health, and the
names of the unhealthy parts (so a stack that is only half up says so, and exits non-zero)."""

from __future__ import annotations

from typing import Any

from dsbridge_local.stack import airflow, control
from dsbridge_local.stack.processes import alive
from dsbridge_local.stack.stack import StackConfig, read_stack, recorded_pids, supervisor_pid

# Airflow's health parts, by the component that serves them.
AIRFLOW_PARTS = {
    "scheduler": "airflow-scheduler",
    "triggerer": "airflow-triggerer",
    "dag_processor": "airflow-dag-processor",
}


def status(cfg: StackConfig) -> dict[str, Any]:
    """The supervisor, each component (pid, state, restarts, last exit code, since, running),
    Airflow's health answer, and `unhealthy`: {name: why}."""
    pids = recorded_pids(cfg)
    reported = (control.read_status(cfg.state_dir) or {}).get("components") or {}
    supervisor = supervisor_pid(cfg)
    report: dict[str, Any] = {
        "supervisor": {"pid": supervisor, "running": supervisor is not None and alive(supervisor)},
        "components": {},
        "airflow_health": None,
    }
    for name in [*reported, *(n for n in pids if n not in reported)]:
        info = dict(reported.get(name) or {})
        pid = pids.get(name, info.get("pid"))
        info |= {"pid": pid, "running": pid is not None and alive(int(pid))}
        info.setdefault("state", "running" if info["running"] else "stopped")
        report["components"][name] = info
    if cfg.stack_file.exists():
        report["airflow_health"] = airflow.health(read_stack(cfg)["airflow"]["url"])
    report["unhealthy"] = unhealthy(report, airflow_expected=cfg.stack_file.exists(), cfg=cfg)
    return report


def unhealthy(report: dict[str, Any], *, airflow_expected: bool, cfg: StackConfig) -> dict[str, str]:
    found: dict[str, str] = {}
    if report["components"] and not report["supervisor"]["running"]:
        found["supervisor"] = "not running: nothing restarts a component that dies"
    for name, info in report["components"].items():
        if not info["running"] or info.get("state") != "running":
            found[name] = _why(info)
    if airflow_expected:
        # The supervisor's reason, when it has one, says more than Airflow's.
        found = _airflow_unhealthy(report["airflow_health"], cfg) | found
    return found


def _why(info: dict[str, Any]) -> str:
    state, code, restarts = info.get("state"), info.get("last_exit_code"), info.get("restarts", 0)
    if state == "failed":
        return f"failed: exited with code {code} after {restarts} restarts; it stays down until `dsbridge down` + `up`"
    if state == "stopped":
        return "stopped on purpose: held by stop_component until start_component"
    if state == "restarting":
        return f"restarting: exited with code {code}"
    return "not running"


def _airflow_unhealthy(health: dict[str, Any] | None, cfg: StackConfig) -> dict[str, str]:
    if health is None:
        return {"airflow-api-server": "does not answer /api/v2/monitor/health"}
    found = {}
    for part, answer in health.items():
        if answer.get("status") != "healthy":
            name = AIRFLOW_PARTS.get(part, "postgres" if part == "metadatabase" and cfg.embedded_database else part)
            found[name] = f"Airflow reports its {part} {answer.get('status')}"
    return found
