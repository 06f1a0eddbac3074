"""Shared fixtures: real Redis, real Celery workers, the emulator over real HTTP.

Each pytest process (xdist worker) runs its own private redis-server; each test gets a
Redis database of its own (flushed first), so tests run in parallel without sharing keys
or Celery queues. Set ASKQ_TEST_REDIS_BINARY to use another redis-server.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis

from emulator.client import EmulatorControl
from emulator.config import EmulatorConfig
from emulator.server import RunningEmulator, serve_in_subprocess
from producer.async_client import AsyncClient
from producer.client import Client
from producer.local_redis import LocalRedis
from worker.settings import Settings, load_settings

DATABASES = 256
ROOT = Path(__file__).resolve().parent.parent


def wait_until(
    condition: Callable[[], Any], timeout: float = 30.0, interval: float = 0.05, what: str = ""
) -> Any:
    """Poll `condition` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or condition}")
        time.sleep(interval)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[LocalRedis]:
    binary = os.environ.get("ASKQ_TEST_REDIS_BINARY") or None
    with LocalRedis(databases=DATABASES, binary=binary) as server:
        yield server


_db_numbers = itertools.cycle(range(1, DATABASES))


@pytest.fixture
def redis_url(redis_server: LocalRedis) -> str:
    db = next(_db_numbers)
    client = redis.Redis.from_url(redis_server.url_for(db))
    client.flushdb()
    client.close()
    return redis_server.url_for(db)


@pytest.fixture(scope="module")
def emulator_server() -> Iterator[RunningEmulator]:
    server = serve_in_subprocess(EmulatorConfig(run_time_s=0.2))
    try:
        yield server
    finally:
        server.stop()


DEFAULT_EMULATOR = EmulatorConfig(run_time_s=0.2).model_dump()


@pytest.fixture
def emulator(emulator_server: RunningEmulator) -> Iterator[EmulatorControl]:
    control = EmulatorControl(emulator_server.base)
    control.configure(**DEFAULT_EMULATOR)
    control.reset()
    yield control
    control.close()


@dataclass
class WorkerProcess:
    process: subprocess.Popen[bytes]
    heartbeat: Path
    log: Path

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


class BlockingAsyncClient:
    """An `AsyncClient` called from blocking test code, so the behaviour tests written for
    `Client` run unchanged against it: every call runs on one event loop (`asyncio.Runner`)
    that the client was made in; async iterators are read to the end. `store` and
    `batch_store` (what tests look into Redis with) come from a plain `Client`."""

    def __init__(self, settings: Settings) -> None:
        self._loop = asyncio.Runner()
        self.inner: AsyncClient = self._loop.run(_made_async(settings))
        self._inspect = Client(settings)
        self.store = self._inspect.store
        self.batch_store = self._inspect.batch_store

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.inner, name)
        if not callable(method):
            return method

        def call(*args: Any, **kwargs: Any) -> Any:
            value = method(*args, **kwargs)
            if inspect.isawaitable(value):
                return self._loop.run(_awaited(value))
            if hasattr(value, "__aiter__"):
                return iter(self._loop.run(_read_all(value)))
            return value

        return call

    def close(self) -> None:
        self._loop.run(self.inner.close())
        self._loop.close()
        self._inspect.close()


async def _made_async(settings: Settings) -> AsyncClient:
    return AsyncClient(settings)


async def _awaited(value: Any) -> Any:
    return await value


async def _read_all(items: Any) -> list[Any]:
    return [item async for item in items]


CLIENT_KINDS = ("sync", "async")
BOTH_CLIENTS = pytest.mark.parametrize("client_kind", CLIENT_KINDS, indirect=True)
"""For tests of the Python API's behaviour: run them with `Client` and with `AsyncClient`
(through `BlockingAsyncClient`); every other test uses `Client`."""


@pytest.fixture
def client_kind(request: pytest.FixtureRequest) -> str:
    return str(getattr(request, "param", "sync"))


def make_client(settings: Settings, kind: str) -> Any:
    """The client a behaviour test drives: `Client`, or `AsyncClient` made blocking."""
    return Client(settings) if kind == "sync" else BlockingAsyncClient(settings)


@dataclass
class Askq:
    """One test's askq deployment: settings, a client, and the workers it started."""

    settings: Settings
    emulator: EmulatorControl
    tmp: Path
    workers: list[WorkerProcess] = field(default_factory=list)
    client_kind: str = "sync"
    _client: Any = None

    @property
    def client(self) -> Client:
        """A `Client` (or, in a test run with BOTH_CLIENTS, an AsyncClient behind the same
        blocking face)."""
        if self._client is None:
            self._client = make_client(self.settings, self.client_kind)
        return self._client  # type: ignore[no-any-return]

    @property
    def routes(self) -> Routes:
        return ROUTES[self.settings.api_style]

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ASKQ_")}
        s = self.settings
        env.update(
            {
                "ASKQ_REDIS_URL": s.redis_url,
                "ASKQ_API_BASE": s.api_base,
                "ASKQ_API_KEY": s.api_key.get_secret_value(),
                "ASKQ_API_QUERY": s.api_query,
                "ASKQ_API_KEY_HEADER": s.api_key_header,
                "ASKQ_WEBHOOK_SECRET": s.webhook_secret.get_secret_value(),
                "ASKQ_WEBHOOK_POLL_S": str(s.webhook_poll_s),
                "ASKQ_CALLBACK_QUEUE": s.callback_queue,
                "ASKQ_CALLBACK_SECRET": s.callback_secret.get_secret_value(),
                "ASKQ_CALLBACK_RETRY_S": str(s.callback_retry_s),
                "ASKQ_RESPONSES_CONVERSATIONS": s.responses_conversations,
                "ASKQ_API_STYLE": s.api_style,
                "ASKQ_ASSISTANT_ID": s.assistant_id,
                "ASKQ_AGENT_ID": s.agent_id,
                "ASKQ_MODEL": s.model,
                "ASKQ_POLL_MIN_S": str(s.poll_min_s),
                "ASKQ_POLL_MAX_S": str(s.poll_max_s),
                "ASKQ_POLL_PREDICT": str(s.poll_predict).lower(),
                "ASKQ_JOB_TIMEOUT_S": str(s.job_timeout_s),
                "ASKQ_MAX_INFLIGHT": str(s.max_inflight),
                "ASKQ_RATE_LIMIT_RPM": str(s.rate_limit_rpm),
                "ASKQ_TOOL_MODULES": s.tool_modules,
                "ASKQ_TOOL_TIMEOUT_S": str(s.tool_timeout_s),
                "ASKQ_SWEEP_INTERVAL_S": str(s.sweep_interval_s),
                "ASKQ_HTTP_TIMEOUT_S": str(s.http_timeout_s),
                "ASKQ_LEASE_MARGIN_S": str(s.lease_margin_s),
                "ASKQ_MAX_API_RETRIES": str(s.max_api_retries),
                "ASKQ_MAX_QUESTION_CHARS": str(s.max_question_chars),
                "ASKQ_REQUEST_DEADLINE_S": str(s.request_deadline_s),
                "ASKQ_HEARTBEAT_S": str(s.heartbeat_s),
                "ASKQ_WORKER_DEAD_AFTER_S": str(s.worker_dead_after_s),
                "ASKQ_MAX_RESPONSE_BYTES": str(s.max_response_bytes),
                "ASKQ_MAX_ANSWER_PAGES": str(s.max_answer_pages),
                "ASKQ_MAX_ANSWER_CHARS": str(s.max_answer_chars),
                "ASKQ_MAX_TOOL_CALLS": str(s.max_tool_calls),
                "ASKQ_MAX_TOOL_ARGUMENT_BYTES": str(s.max_tool_argument_bytes),
                "PYTHONPATH": str(ROOT),
            }
        )
        env.update(extra)
        return env

    def start_worker(
        self, *, concurrency: int = 8, pool: str = "threads", **extra_env: str
    ) -> WorkerProcess:
        n = len(self.workers)
        heartbeat = self.tmp / f"worker{n}.alive"
        log = self.tmp / f"worker{n}.log"
        env = self.env(ASKQ_HEARTBEAT_FILE=str(heartbeat), **extra_env)
        args = [
            sys.executable, "-m", "celery", "-A", "worker", "worker", "--loglevel=INFO",
            f"--pool={pool}", f"--concurrency={concurrency}", f"--hostname=test{n}@%h",
            "--without-mingle", "--without-gossip",
        ]  # fmt: skip
        with open(log, "wb") as out:
            process = subprocess.Popen(
                args,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.tmp,
                start_new_session=True,
            )
        worker = WorkerProcess(process, heartbeat, log)
        self.workers.append(worker)
        wait_until(lambda: heartbeat.exists() or not worker.alive(), 60, what="the worker's pump")
        assert worker.alive(), f"worker exited at start:\n{worker.output()[-3000:]}"
        return worker

    def cli(self, *args: str, input: str | None = None, timeout: float = 120) -> Any:
        return subprocess.run(
            [sys.executable, "-m", "producer", *args],
            env=self.env(),
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.tmp,
        )

    def close(self) -> None:
        for worker in self.workers:
            # the whole session: prefork children must not outlive a killed parent
            if worker.alive():
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(worker.process.pid, signal.SIGTERM)
            worker.stop()
        if self._client is not None:
            self._client.close()


@dataclass(frozen=True)
class Routes:
    """The emulator's names for one protocol's endpoints, so a test reads the same for both."""

    thread: str
    create: str
    poll: str
    submit: str = ""
    """Where tool outputs go."""


ROUTES = {
    "assistants": Routes(
        thread="POST /v1/threads",
        create="POST /v1/threads/{thread_id}/runs",
        poll="GET /v1/threads/{thread_id}/runs/{run_id}",
        submit="POST /v1/threads/{thread_id}/runs/{run_id}/submit_tool_outputs",
    ),
    "responses": Routes(
        thread="POST /v1/conversations",
        create="POST /v1/responses",
        poll="GET /v1/responses/{response_id}",
        submit="POST /v1/responses",
    ),
    # a session is created with its question, which starts its first turn: one request
    "agents": Routes(
        thread="POST /v1/agents/sessions",
        create="POST /v1/agents/sessions",
        poll="GET /v1/agents/sessions/{session_id}/turns/{turn_id}",
        submit="POST /v1/agents/sessions/{session_id}/events",
    ),
}
STYLES = tuple(ROUTES)


ASSISTANTS_ONLY = pytest.mark.parametrize("style", ["assistants"], indirect=True)
"""For tests of behaviour no protocol adapter takes part in (Flower, metrics, shutdown, batch
names, the learning of run durations: the same driver code for every style): run them once.
A test of protocol behaviour pinned with it says in its docstring why the other styles do
not apply."""


BRIDGED_STYLES = pytest.mark.parametrize("style", ["assistants", "responses"], indirect=True)
"""For tests through the chat bridge (`engine="chat"`): it serves these two protocols; the
emulator answers Agents sessions with its scripted engine only."""


@pytest.fixture(params=STYLES)
def style(request: pytest.FixtureRequest) -> str:
    """Every test that deploys askq runs once per protocol (pin one with
    `@pytest.mark.parametrize("style", ["assistants"], indirect=True)`)."""
    return str(request.param)


@pytest.fixture
def make_askq(
    redis_url: str,
    emulator: EmulatorControl,
    emulator_server: RunningEmulator,
    tmp_path: Path,
    style: str,
    client_kind: str,
) -> Iterator[Callable[..., Askq]]:
    made: list[Askq] = []

    def make(**overrides: Any) -> Askq:
        fields: dict[str, Any] = {
            "redis_url": redis_url,
            "api_base": emulator_server.url,
            "api_style": style,
            "assistant_id": "asst_test",
            "agent_id": "agent_test",
            "model": "emulator-model",
            "poll_min_s": 0.1,
            "poll_max_s": 0.5,
            "sweep_interval_s": 0.5,
            **overrides,
        }
        deployment = Askq(load_settings(**fields), emulator, tmp_path, client_kind=client_kind)
        made.append(deployment)
        return deployment

    yield make
    for deployment in made:
        deployment.close()


@pytest.fixture
def askq(make_askq: Callable[..., Askq]) -> Askq:
    """A deployment with one worker running, default settings."""
    deployment = make_askq()
    deployment.start_worker()
    return deployment
