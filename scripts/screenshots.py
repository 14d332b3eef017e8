"""Take the documentation's screenshots from the running local stack, in headless Chromium.

Why: the pictures in docs/ should show what a person really sees, not a mock-up that drifts from the
product. This script drives a real browser against the stack that `dsbridge up` started and writes

- ``airflow-grid.png``: the Airflow 3 UI's grid view of one run of the example DAG
  ``merchant_threshold`` (submit -> wait -> collect -> notify_success / notify_failure), and
- ``service-page.png``: the reference optimization service's page, which lists the callbacks received.

By default it first triggers a fresh run through the REST API, as the API user and exactly as the
optimization service would, and waits (bounded) until it ends and its callback arrived; ``--run-id``
shows an existing run instead.

The browser is Debian's Chromium (``apt-get install chromium``), driven by Playwright for Python with
``executable_path``; nothing downloads a browser (never run ``playwright install``). The UI login uses
the SimpleAuthManager's JWT, put where the Airflow 3 UI reads it: the ``_token`` cookie
(``COOKIE_NAME_JWT_TOKEN``). Only loopback URLs are visited; every wait is bounded; the browser is
closed and its throw-away profile removed even on error.

    .venv/bin/python scripts/screenshots.py [--stack .dsbridge/stack.json] [--out docs/images] [--run-id ID]

Exit status: 0 both images written; 1 something failed on the way; 2 the stack is not up.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Generator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import httpx
from playwright.sync_api import BrowserContext, Page, sync_playwright
from playwright.sync_api import Error as PlaywrightError

from dsbridge.client import AirflowApiError, AirflowClient

REPO = Path(__file__).resolve().parent.parent
DAG_ID = "merchant_threshold"
DEFAULT_CONF: dict[str, Any] = {"merchant_id": "m_1042"}
CHROMIUM = "/usr/bin/chromium"
# --headless and --user-data-dir are given by Playwright (headless=True, launch_persistent_context).
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1400, "height": 900}
TERMINAL_STATES = ("success", "failed")


class StackDown(RuntimeError):
    """The local stack is not there (no stack.json, or its services do not answer)."""


class ScreenshotError(RuntimeError):
    """Something on the way to a screenshot failed; the message says what."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--stack",
        type=Path,
        default=REPO / ".dsbridge" / "stack.json",
        help="the stack.json written by `dsbridge up` (default: .dsbridge/stack.json)",
    )
    parser.add_argument(
        "--out", type=Path, default=REPO / "docs" / "images", help="where to write the PNGs (default: docs/images)"
    )
    parser.add_argument("--run-id", help=f"the run of {DAG_ID} to show (default: trigger a new one and wait for it)")
    parser.add_argument("--run-timeout", type=float, default=180.0, help="seconds to wait for a new run to end")
    parser.add_argument("--page-timeout", type=float, default=60.0, help="seconds to wait for each page to render")
    return parser.parse_args(argv)


def require_loopback(url: str) -> str:
    """Return `url` without a trailing slash; refuse anything that is not http(s) on a loopback address."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if parts.scheme not in ("http", "https") or not loopback:
        raise ScreenshotError(f"refusing {url!r}: this script only visits loopback http(s) URLs")
    return url.rstrip("/")


def load_stack(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise StackDown(f"{path} does not exist")
    try:
        stack = dict(json.loads(path.read_text()))
        needed = [
            stack["airflow"]["url"],
            stack["airflow"]["username"],
            stack["airflow"]["password"],
            stack["airflow_admin"]["username"],
            stack["airflow_admin"]["password"],
            stack["service"]["url"],
            stack["service"].get("admin_token"),  # stacks started before the token existed lack it
        ]
    except (ValueError, KeyError, TypeError) as exc:
        raise StackDown(f"{path} is not a stack.json written by `dsbridge up` ({exc!r})") from exc
    if not all(isinstance(value, str) and value for value in needed):
        raise StackDown(f"{path} lacks an Airflow or service URL or credential (restart an older stack)")
    service = stack["service"]
    stack["airflow"]["url"] = require_loopback(stack["airflow"]["url"])
    service["url"] = require_loopback(service["url"])
    service["events_url"] = require_loopback(service.get("events_url") or service["url"] + "/events")
    return stack


def service_auth(stack: dict[str, Any]) -> dict[str, str]:
    """The header the reference service wants for everything but /health and the callbacks."""
    return {"Authorization": f"Bearer {stack['service']['admin_token']}"}


def check_up(stack: dict[str, Any]) -> None:
    """One bounded probe each of Airflow's API server and the reference service (with its token)."""
    probes = {
        "Airflow API server": (stack["airflow"]["url"] + "/api/v2/monitor/health", {}),
        "reference optimization service": (stack["service"]["events_url"], service_auth(stack)),
    }
    for name, (url, headers) in probes.items():
        try:
            answer = httpx.get(url, headers=headers, timeout=5.0)
        except httpx.HTTPError as exc:
            raise StackDown(f"the {name} does not answer at {url} ({exc.__class__.__name__})") from exc
        if answer.status_code >= 400:
            raise StackDown(f"the {name} answered {answer.status_code} at {url}")


def prepare_run(stack: dict[str, Any], run_id: str | None, timeout: float) -> str:
    """Return the id of an ended run of the DAG: the given one, or a new one triggered as the API user."""
    airflow = stack["airflow"]
    with AirflowClient(airflow["url"], airflow["username"], airflow["password"]) as client:
        if run_id is None:
            run_id = f"screenshots-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
            print(f"triggering {DAG_ID} run {run_id} with conf {json.dumps(DEFAULT_CONF)}")
            client.trigger(DAG_ID, DEFAULT_CONF, run_id)
            run = client.wait(DAG_ID, run_id, timeout=timeout, poll_seconds=1.0)
        else:
            run = client.run(DAG_ID, run_id)
        print(f"run {run_id} is '{run['state']}'")
        if run["state"] != "success":
            print(f"warning: run {run_id} is '{run['state']}', the grid will not be all green", file=sys.stderr)
    return run_id


def wait_for_callback(stack: dict[str, Any], run_id: str, timeout: float = 30.0) -> bool:
    """Wait (bounded) until the service received the run's callback, so its page lists it."""
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout * 2) + 1):
        answer = httpx.get(stack["service"]["events_url"], headers=service_auth(stack), timeout=5.0)
        answer.raise_for_status()
        events = answer.json()
        if any((event.get("payload") or {}).get("request_id") == run_id for event in events):
            return True
        if time.monotonic() >= deadline:
            break
        time.sleep(0.5)
    return False


def admin_token(stack: dict[str, Any]) -> str:
    admin = stack["airflow_admin"]
    answer = httpx.post(
        stack["airflow"]["url"] + "/auth/token",
        json={"username": admin["username"], "password": admin["password"]},
        timeout=10.0,
    )
    if answer.status_code >= 400:
        raise ScreenshotError(f"Airflow refused the UI login of {admin['username']!r}: {answer.status_code}")
    return str(answer.json()["access_token"])


def task_ids(stack: dict[str, Any], run_id: str) -> list[str]:
    airflow = stack["airflow"]
    with AirflowClient(airflow["url"], airflow["username"], airflow["password"]) as client:
        return sorted(client.task_instances(DAG_ID, run_id))


@contextmanager
def browser() -> Generator[BrowserContext, None, None]:
    """Debian's Chromium, headless, with a fresh profile that is removed afterwards whatever happens."""
    if not Path(CHROMIUM).is_file():
        raise ScreenshotError(f"{CHROMIUM} is missing: apt-get install -y chromium")
    profile = tempfile.mkdtemp(prefix="dsbridge-screenshots-")
    try:
        with sync_playwright() as playwright:
            context = playwright.chromium.launch_persistent_context(
                profile,
                executable_path=CHROMIUM,
                headless=True,
                args=CHROMIUM_FLAGS,
                viewport=VIEWPORT,
                timezone_id="UTC",
                locale="en-US",
            )
            try:
                yield context
            finally:
                context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def shoot(page: Page, path: Path, attempts: int = 3) -> None:
    """Screenshot the viewport; retry (bounded) if the page navigated meanwhile (the service page reloads)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(1, attempts + 1):
        try:
            page.screenshot(path=str(path), animations="disabled", timeout=15_000)
            return
        except PlaywrightError:
            if attempt == attempts:
                raise
            page.wait_for_load_state("load", timeout=15_000)


def airflow_grid(context: BrowserContext, stack: dict[str, Any], run_id: str, out: Path, timeout_ms: float) -> None:
    airflow_url = stack["airflow"]["url"]
    context.add_cookies([{"name": "_token", "value": admin_token(stack), "url": airflow_url + "/"}])
    tasks = task_ids(stack, run_id)
    page = context.new_page()
    url = f"{airflow_url}/dags/{quote(DAG_ID)}/runs/{quote(run_id, safe='')}"
    page.goto(url, wait_until="load", timeout=timeout_ms)
    if "/auth/login" in page.url or "/login" in urlsplit(page.url).path:
        raise ScreenshotError(f"the Airflow UI sent the browser to its login page ({page.url}): the token was refused")
    # The grid is drawn once the UI fetched the run's task instances: one link per task of this run.
    for task in tasks:
        page.locator(f'[data-testid="grid-{run_id}-{task}"]').wait_for(state="visible", timeout=timeout_ms)
    page.locator('[data-testid="state-badge"]').first.wait_for(state="visible", timeout=timeout_ms)
    with suppress(PlaywrightError):  # the UI may keep polling; the grid is already drawn
        page.wait_for_load_state("networkidle", timeout=10_000)
    page.mouse.move(0, VIEWPORT["height"] - 1)  # no tooltip over the grid
    page.wait_for_timeout(500)
    shoot(page, out)
    page.close()


def service_page(context: BrowserContext, stack: dict[str, Any], out: Path, timeout_ms: float) -> None:
    page = context.new_page()
    # The page takes the admin token as ?token= (a browser sends no Authorization header).
    url = f"{stack['service']['url']}/?{urlencode({'token': stack['service']['admin_token']})}"
    page.goto(url, wait_until="load", timeout=timeout_ms)
    page.locator("table tbody tr").first.wait_for(state="visible", timeout=timeout_ms)
    shoot(page, out)
    page.close()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        stack = load_stack(args.stack)
        check_up(stack)
    except StackDown as exc:
        print(f"error: the local stack is not up: {exc}. Start it with `.venv/bin/dsbridge up`.", file=sys.stderr)
        return 2
    except ScreenshotError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    grid_png, service_png = args.out / "airflow-grid.png", args.out / "service-page.png"
    timeout_ms = args.page_timeout * 1000
    try:
        run_id = prepare_run(stack, args.run_id, args.run_timeout)
        if not wait_for_callback(stack, run_id):
            print(f"warning: no callback for {run_id} reached the service yet", file=sys.stderr)
        with browser() as context:
            airflow_grid(context, stack, run_id, grid_png, timeout_ms)
            service_page(context, stack, service_png, timeout_ms)
    except (ScreenshotError, AirflowApiError, TimeoutError, httpx.HTTPError, PlaywrightError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for png in (grid_png, service_png):
        print(f"wrote {png} ({png.stat().st_size // 1024} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
