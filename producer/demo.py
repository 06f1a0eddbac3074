"""`askq demo`: the whole system on one machine with no configuration.

Starts what is missing (a private Redis when none answers at ASKQ_REDIS_URL, the emulator,
one Celery worker), answers a sample batch with a progress bar, prints the answers and
stops everything it started, even on Ctrl-C.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import uuid
from contextlib import ExitStack
from importlib import resources
from pathlib import Path

from rich.console import Console
from rich.table import Table

from emulator import real_model as real_model_cache
from emulator.config import EmulatorConfig
from emulator.server import serve_in_subprocess
from producer.client import Client
from producer.inputs import parse_file
from producer.local_redis import LocalRedis, free_port, reachable
from producer.progress import watch_batch
from worker.errors import InputError
from worker.settings import load_settings
from worker.states import JobStatus

DEMO_ASSISTANT = "asst_askq_demo"
DEMO_RUN_TIME_S = 1.5
DEMO_MODEL_MAX_TOKENS = 128
"""SmolLM2-135M writes ~100 tokens/s on 2 cores: short answers keep the demo under a minute."""
WORKER_STOP_TIMEOUT_S = 30


def sample_questions() -> Path:
    return Path(str(resources.files("producer") / "data" / "sample_questions.txt"))


def new_log_file(process: str) -> Path:
    """A log file of this run's own, kept afterwards: two demos never write into one file."""
    handle, name = tempfile.mkstemp(prefix=f"askq-demo-{process}-", suffix=".log")
    os.close(handle)
    return Path(name)


def start_worker(env: dict[str, str], concurrency: int, log: Path) -> subprocess.Popen[bytes]:
    args = [
        sys.executable, "-m", "celery", "-A", "worker", "worker",
        "--loglevel=WARNING", "--pool=threads", f"--concurrency={concurrency}",
        f"--hostname=askq-demo-{uuid.uuid4().hex[:6]}@%h", "--without-mingle",
        "--without-gossip",
    ]  # fmt: skip
    with open(log, "wb") as out:
        return subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT)


def stop_worker(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=WORKER_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def start_api(stack: ExitStack, console: Console, real_model: bool) -> str:
    """The API the demo's worker talks to: the scripted emulator, or with `real_model` the
    chat bridge in front of llama-server running SmolLM2 from the real-model cache."""
    if not real_model:
        emulator = serve_in_subprocess(EmulatorConfig(run_time_s=DEMO_RUN_TIME_S))
        stack.callback(emulator.stop)
        console.print(f"[dim]Emulator: {emulator.url} (scripted engine)[/]")
        return emulator.url
    if not real_model_cache.is_cached():
        raise InputError(
            "askq demo --model needs llama-server and SmolLM2 built once (~5 min on 2 cores): "
            "run scripts/real-model build (or python -m emulator.real_model build)"
        )
    log = new_log_file("llama-server")
    try:
        model = real_model_cache.start_server(free_port(), log)
    except real_model_cache.RealModelUnavailable as exc:
        raise InputError(f"askq demo --model: {exc}") from None
    stack.callback(model.stop)
    console.print(f"[dim]Model: llama-server {model.url} ({real_model_cache.GGUF_NAME})[/]")
    bridge = serve_in_subprocess(
        EmulatorConfig(
            engine="chat",
            upstream_url=model.url,
            upstream_model=real_model_cache.MODEL_ALIAS,
            upstream_max_tokens=DEMO_MODEL_MAX_TOKENS,
        )
    )
    stack.callback(bridge.stop)
    console.print(f"[dim]Bridge: {bridge.url} (chat engine in front of the model)[/]")
    return bridge.url


def run_demo(questions: str | None, concurrency: int, real_model: bool = False) -> int:
    console = Console(stderr=True, soft_wrap=True)  # paths stay whole, on one line
    settings = load_settings()
    path = Path(questions) if questions else sample_questions()
    parsed = parse_file(path)
    if not parsed.items:
        raise InputError(f"no usable question in {path}")
    with ExitStack() as stack:
        redis_url = settings.redis_url
        private: LocalRedis | None = None
        if reachable(redis_url):
            console.print(f"[dim]Redis: using {redis_url.split('@')[-1]}[/]")
        else:
            server = private = stack.enter_context(LocalRedis())
            redis_url = server.url
            console.print(
                f"[dim]Redis: none at ASKQ_REDIS_URL; started a private one "
                f"({server.binary}, port {server.port})[/]"
            )
        api_url = start_api(stack, console, real_model)
        env = {
            **os.environ,
            "ASKQ_REDIS_URL": redis_url,
            "ASKQ_API_BASE": api_url,
            "ASKQ_API_STYLE": "assistants",
            "ASKQ_ASSISTANT_ID": DEMO_ASSISTANT,
            "ASKQ_API_KEY": "",
        }
        log = new_log_file("worker")
        worker = start_worker(env, concurrency, log)
        stack.callback(stop_worker, worker)
        console.print(
            f"[dim]Worker: celery -A worker worker (pid {worker.pid}, "
            f"{concurrency} threads, log {log})[/]"
        )
        demo_settings = settings.model_copy(
            update={
                "redis_url": redis_url,
                "api_base": api_url,
                "assistant_id": DEMO_ASSISTANT,
            }
        )
        client = Client(demo_settings)
        stack.callback(client.close)
        batch_id = client.submit_batch([item.request for item in parsed.items], name="demo")
        console.print(f"Submitted {len(parsed.items)} questions as [bold]{batch_id}[/]")
        status = watch_batch(client, batch_id, timeout=300)
        table = Table(title=f"askq demo: {batch_id}", show_lines=False)
        table.add_column("#", justify="right")
        table.add_column("question")
        table.add_column("status")
        table.add_column("answer")
        for index, (item, result) in enumerate(
            zip(parsed.items, client.results(batch_id), strict=True), start=1
        ):
            answer = result.answer or (
                f"{result.partial_answer.strip()} […]"  # cut at its token limit
                if result.partial_answer
                else (result.error.message if result.error else "")
            )
            style = "green" if result.status is JobStatus.COMPLETED else "red"
            table.add_row(
                str(index),
                item.request.question or "",
                f"[{style}]{result.status.value}[/]",
                answer,
            )
        Console().print(table)
        kept = (
            f"askq results {batch_id}"
            if private is None
            else "the private Redis goes away now; set ASKQ_REDIS_URL to keep results"
        )
        console.print(f"{status.completed}/{status.size} completed. Results: {kept}.")
        return 0 if status.completed == status.size else 1
