"""Serve the emulator with uvicorn, in the foreground (CLI) or in a background thread (tests, bench).

Only loopback addresses are offered by default; binding elsewhere is the caller's explicit choice.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import uvicorn

from dsbridge_local.emulator.app import Emulator, EmulatorConfig
from dsbridge_local.ports import free_port

STARTUP_TIMEOUT_S = 15.0


def _uvicorn_config(emulator: Emulator, host: str, port: int, log_level: str) -> uvicorn.Config:
    return uvicorn.Config(
        emulator.app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=5,
    )


def serve(config: EmulatorConfig, host: str, port: int, log_level: str = "warning") -> None:
    """Run until interrupted (SIGINT/SIGTERM); active runs end as INTERNAL_ERROR on the way out."""
    emulator = Emulator(config)
    emulator.serving_at(host, port)
    try:
        uvicorn.Server(_uvicorn_config(emulator, host, port, log_level)).run()
    finally:
        emulator.close()


@dataclass
class BackgroundServer:
    """An emulator serving from a thread; `stop()` shuts it down cleanly."""

    emulator: Emulator
    server: uvicorn.Server
    thread: threading.Thread
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stop(self, timeout_s: float = 15.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=timeout_s)
        self.emulator.close()


def start_background(config: EmulatorConfig, host: str = "127.0.0.1", port: int = 0) -> BackgroundServer:
    emulator = Emulator(config)
    port = port or free_port(host)
    emulator.serving_at(host, port)
    server = uvicorn.Server(_uvicorn_config(emulator, host, port, "warning"))
    thread = threading.Thread(target=server.run, name=f"emulator-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            emulator.close()
            raise RuntimeError(f"the emulator did not start on {host}:{port}")
        time.sleep(0.01)
    return BackgroundServer(emulator, server, thread, host, port)
