"""Serving the emulator: blocking, in a background thread, or in a child process."""

from __future__ import annotations

import contextlib
import os
import selectors
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

import httpx
import uvicorn

from emulator.app import create_app
from emulator.config import EmulatorConfig

LISTENING = "askq emulator listening on "
_PROJECT_ROOT = str(Path(__file__).resolve().parent.parent)


class RunningEmulator:
    """A live emulator: `.url` ends in /v1 (give it to an OpenAI client), `.base` does not."""

    def __init__(self, base: str, stop: Callable[[], None]) -> None:
        self.base = base
        self.url = f"{base}/v1"
        self._stop = stop
        self._stopped = False

    def stop(self) -> None:
        """Stop serving; safe to call twice."""
        if not self._stopped:
            self._stopped = True
            self._stop()

    def __enter__(self) -> RunningEmulator:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"RunningEmulator(url={self.url!r})"


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


def _server(config: EmulatorConfig, host: str, port: int) -> uvicorn.Server:
    # uvloop + httptools and no access log: benchmarks must not find the emulator the bottleneck.
    uv_config = uvicorn.Config(
        create_app(config),
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
        backlog=4096,
        timeout_keep_alive=30,
    )
    return uvicorn.Server(uv_config)


def _base(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    if host in ("0.0.0.0", "::"):
        shown = "127.0.0.1"
    return f"http://{shown}:{port}"


def run(
    config: EmulatorConfig, host: str = "127.0.0.1", port: int = 8787, *, announce: bool = True
) -> None:
    """Serve until interrupted. With `announce`, print the base URL (port 0 picks a free one)."""
    sock = _bind(host, port)
    if announce:
        print(f"{LISTENING}{_base(host, sock.getsockname()[1])}", flush=True)
    _server(config, host, sock.getsockname()[1]).run(sockets=[sock])


def serve_in_thread(
    config: EmulatorConfig, host: str = "127.0.0.1", port: int = 0, startup_timeout: float = 10.0
) -> RunningEmulator:
    """Serve from a daemon thread of this process (shares the GIL: fine for functional tests)."""
    sock = _bind(host, port)
    bound = sock.getsockname()[1]
    server = _server(config, host, bound)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name=f"askq-emulator-{bound}", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            raise RuntimeError("the emulator did not start")
        time.sleep(0.005)

    def stop() -> None:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()

    return RunningEmulator(_base(host, bound), stop)


def serve_in_subprocess(
    config: EmulatorConfig, host: str = "127.0.0.1", port: int = 0, startup_timeout: float = 20.0
) -> RunningEmulator:
    """Serve from a child `python -m emulator` (its own GIL: what benchmarks should use)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_PROJECT_ROOT, env.get("PYTHONPATH")) if p)
    cmd = [
        sys.executable,
        "-m",
        "emulator",
        "--config-json",
        config.model_dump_json(),
        "--host",
        host,
        "--port",
        str(port),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, env=env, text=True)

    def stop() -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()

    try:
        base = _read_announcement(proc, startup_timeout)
        _wait_healthy(base, proc, startup_timeout)
    except BaseException:
        stop()
        raise
    return RunningEmulator(base, stop)


def _read_announcement(proc: subprocess.Popen[str], timeout: float) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if sel.select(timeout=0.1):
                line = proc.stdout.readline()
                if not line:
                    break
                if line.startswith(LISTENING):
                    return line[len(LISTENING) :].strip()
            elif proc.poll() is not None:
                break
    raise RuntimeError(f"the emulator process did not start (exit code {proc.poll()})")


def _wait_healthy(base: str, proc: subprocess.Popen[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the emulator process exited with code {proc.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{base}/_emulator/health", timeout=1).status_code == 200:
                return
        time.sleep(0.02)
    raise RuntimeError("the emulator process never answered")
