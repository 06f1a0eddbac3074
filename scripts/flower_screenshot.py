#!/usr/bin/env python3
"""Take docs/flower-tasks.png: Flower's task list while askq answers a small batch.

Starts everything it needs on this machine and stops it afterwards: a private Redis, the
emulator, one worker, Flower (basic auth), then Debian's headless chromium
(`apt-get install chromium`). Run from the repository root:

    python scripts/flower_screenshot.py [-o docs/flower-tasks.png] [--jobs 24]

tests/integration/test_flower.py imports the helpers below (Flower, chromium) from here.
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

FLOWER_USER = "askq"
FLOWER_PASSWORD = "flower-screenshot"
WINDOW = "1400,900"
WAVE = 4
WAVE_PAUSE_S = 0.4
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
SCREENSHOT_COLUMNS = "name,state,result,received,runtime"
"""Flower's default columns with `result` in place of the task uuid, args and worker: a task's
result names each of its jobs and says what the task did to it (the job ids it carries are
its only arguments)."""


def find_chromium() -> str | None:
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def poll(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


class Flower:
    """A `celery -A worker flower` subprocess with basic auth, on loopback."""

    def __init__(
        self,
        env: dict[str, str],
        port: int,
        log: Path,
        auth: tuple[str, str],
        columns: str | None = None,
    ) -> None:
        self.port = port
        self.auth = auth
        self.log = log
        # credentials through the environment, as docs/deploy.md runs it: a command line is
        # visible to every user of the machine (ps) and in Flower's own worker pages
        flower_env = {**env, "FLOWER_BASIC_AUTH": f"{auth[0]}:{auth[1]}"}
        if columns:
            flower_env["FLOWER_TASKS_COLUMNS"] = columns
        args = [
            sys.executable, "-m", "celery", "-A", "worker", "flower",
            f"--port={port}", "--address=127.0.0.1",
        ]  # fmt: skip
        with open(log, "wb") as out:
            self.process = subprocess.Popen(
                args, env=flower_env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                start_new_session=True,
            )  # fmt: skip
        self.http = httpx.Client(base_url=self.url, auth=auth, timeout=10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def wait_ready(self, timeout: float = 30) -> None:
        def healthy() -> bool:
            if self.process.poll() is not None:
                raise RuntimeError(f"flower exited:\n{self.output()[-3000:]}")
            try:
                return httpx.get(f"{self.url}/healthcheck", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        poll(healthy, timeout, "Flower's /healthcheck")

    def tasks(self) -> dict[str, dict[str, Any]]:
        reply = self.http.get("/api/tasks")
        reply.raise_for_status()
        tasks: dict[str, dict[str, Any]] = reply.json()
        return tasks

    def shows(self, job_id: str) -> bool:
        """True once Flower lists a task whose only argument is this job id."""
        return any(task.get("args") == repr([job_id]) for task in self.tasks().values())

    def stop(self) -> None:
        self.http.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def chromium(binary: str, url: str, *mode: str, timeout: float = 60) -> str:
    """Run headless chromium once on `url`; `mode` is `--dump-dom` or `--screenshot=PATH`.
    Returns stdout (the DOM for --dump-dom)."""
    with tempfile.TemporaryDirectory(prefix="askq-chromium-") as profile:
        args = [
            binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--disable-dev-shm-usage", f"--user-data-dir={profile}",
            f"--window-size={WINDOW}", "--hide-scrollbars", "--virtual-time-budget=5000",
            *mode, url,
        ]  # fmt: skip
        done = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"chromium failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done.stdout


def authed_url(flower: Flower, path: str) -> str:
    """Credentials in the URL: chromium answers the basic-auth challenge with them, and
    reuses them for the page's own API calls to the same origin."""
    user, password = flower.auth
    return f"http://{user}:{password}@127.0.0.1:{flower.port}{path}"


@contextmanager
def running_stack(tmp: Path, run_time_s: float) -> Iterator[tuple[dict[str, str], Any]]:
    """Redis, the emulator and one worker; yields (environment, client)."""
    from emulator.config import EmulatorConfig
    from emulator.server import serve_in_subprocess
    from producer.client import Client
    from producer.local_redis import LocalRedis
    from worker.settings import load_settings

    with ExitStack() as stack:
        redis_server = stack.enter_context(LocalRedis())
        emulator = serve_in_subprocess(EmulatorConfig(run_time_s=run_time_s))
        stack.callback(emulator.stop)
        heartbeat = tmp / "worker.alive"
        env = {k: v for k, v in os.environ.items() if not k.startswith("ASKQ_")}
        env.update(
            {
                "ASKQ_REDIS_URL": redis_server.url,
                "ASKQ_API_BASE": emulator.url,
                "ASKQ_ASSISTANT_ID": "asst_screenshot",
                "ASKQ_TOOL_MODULES": "worker.builtin_tools",
                "ASKQ_POLL_MIN_S": "0.3",
                "ASKQ_POLL_MAX_S": "1",
                "ASKQ_HEARTBEAT_FILE": str(heartbeat),
                "PYTHONPATH": str(ROOT),
            }
        )
        with open(tmp / "worker.log", "wb") as out:
            worker = subprocess.Popen(
                [
                    sys.executable, "-m", "celery", "-A", "worker", "worker",
                    "--loglevel=INFO", "--pool=threads", "--concurrency=8",
                    "--hostname=screenshot@%h", "--without-mingle", "--without-gossip",
                ],
                env=env, stdout=out, stderr=subprocess.STDOUT, cwd=tmp,
            )  # fmt: skip

        def stop_worker() -> None:
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
                try:
                    worker.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    worker.kill()
                    worker.wait()

        stack.callback(stop_worker)
        poll(lambda: heartbeat.exists() or worker.poll() is not None, 60, "the worker")
        if worker.poll() is not None:
            raise RuntimeError((tmp / "worker.log").read_text(errors="replace")[-3000:])
        client = Client(
            load_settings(
                redis_url=redis_server.url,
                api_base=emulator.url,
                assistant_id="asst_screenshot",
            )
        )
        stack.callback(client.close)
        yield env, client


def wait_for_events(flower: Flower, client: Any, timeout: float = 30) -> None:
    """Flower only sees events sent after it subscribed: ask small questions until one
    shows up, so nothing of the batch that follows is missed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job_id = client.ask("What is 1 + 1?")
        client.wait(job_id, timeout=30)
        if poll_quietly(functools.partial(flower.shows, job_id)):
            return
    raise TimeoutError(f"Flower showed no task event within {timeout} s:\n{flower.output()}")


def poll_quietly(condition: Callable[[], bool], timeout: float = 3) -> bool:
    try:
        return bool(poll(condition, timeout, "condition"))
    except TimeoutError:
        return False


def screenshot_questions(jobs: int) -> list[dict[str, str]]:
    questions: list[dict[str, str]] = []
    for i in range(jobs):
        if i % 6 == 5:
            question = f'Work it out: [tool:calculate {{"expression": "{i} * 37"}}]'
        elif i % 12 == 7:
            question = f"[fail] What is {i} * 37?"  # a failed job, found by `result:failed`
        else:
            question = f"What is {i} * 37?"
        questions.append({"question": question, "custom_id": f"q{i}"})
    return questions


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", default=str(ROOT / "docs" / "flower-tasks.png"))
    parser.add_argument("--jobs", type=int, default=48)
    parser.add_argument("--run-time", type=float, default=2.0, help="emulator run time (s)")
    options = parser.parse_args()
    binary = find_chromium()
    if binary is None:
        print("no chromium on PATH: apt-get install -y chromium", file=sys.stderr)
        return 2
    from producer.local_redis import free_port

    with tempfile.TemporaryDirectory(prefix="askq-flower-") as tmp_name:
        tmp = Path(tmp_name)
        with running_stack(tmp, options.run_time) as (env, client):
            flower = Flower(
                env,
                free_port(),
                tmp / "flower.log",
                (FLOWER_USER, FLOWER_PASSWORD),
                columns=SCREENSHOT_COLUMNS,
            )
            try:
                flower.wait_ready()
                wait_for_events(flower, client)
                # Questions arrive in small waves, as from an app, and the picture is taken
                # mid-way: starts, polls and tool runs side by side, some still running.
                questions = screenshot_questions(options.jobs)
                batches: list[str] = []

                def submit_waves() -> None:
                    for start in range(0, len(questions), WAVE):
                        batches.append(client.submit_batch(questions[start : start + WAVE]))
                        time.sleep(WAVE_PAUSE_S)

                submitter = threading.Thread(target=submit_waves)
                submitter.start()
                time.sleep(WAVE_PAUSE_S * 4)
                output = Path(options.output).resolve()
                output.parent.mkdir(parents=True, exist_ok=True)
                chromium(binary, authed_url(flower, "/tasks"), f"--screenshot={output}")
                submitter.join()
                for batch_id in batches:
                    status = client.wait(batch_id, timeout=120)
                    print(f"batch {batch_id}: {dict(status.counts)}", file=sys.stderr)
                print(f"saved {output}", file=sys.stderr)
                # a failed job, found the way an operator would: Flower's search on results
                found = poll(
                    lambda: flower.http.get(
                        "/api/tasks", params={"search": "result:failed"}
                    ).json(),
                    30,
                    "a failed job in Flower",
                )
                detail = output.with_name(output.stem + "-failed.png")
                chromium(
                    binary,
                    authed_url(flower, f"/task/{next(iter(found))}"),
                    f"--screenshot={detail}",
                )
                print(f"saved {detail}", file=sys.stderr)
            finally:
                flower.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
