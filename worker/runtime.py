"""Per-process resources of a worker: settings, Redis, the HTTP pool, the adapter, the
heartbeat and the server clock.

Prefork forks after import, so nothing here is created at import time: `runtime()` builds
them on first use in each process (checked by pid) and the children never share a socket.
"""

from __future__ import annotations

import contextlib
import os
import random
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx
import redis

from worker.adapters.assistants import AssistantsAdapter
from worker.adapters.base import Adapter, Bounds
from worker.adapters.responses import Always, Conversations, ResponsesAdapter
from worker.conversations import ConversationSwitch
from worker.heartbeat import RunningJobs, process_heartbeat
from worker.limits import LimitStore
from worker.machine import PollPolicy
from worker.models import JobRecord
from worker.redis_store import ServerClock, connect
from worker.settings import Settings, get_settings
from worker.store import JobStore
from worker.tools import REGISTRY, ToolRegistry
from worker.webhook_index import RunIndex

USER_AGENT = "askq/0.1"
JOB_THREADS = 64
"""Threads a process gives to the jobs of packed messages: enough for a few messages of
ASKQ_MAX_JOBS_PER_MESSAGE jobs at once; they wait on the API, not the CPU."""


def http_client(settings: Settings) -> httpx.Client:
    """The one pooled client of a worker process. The key header and the query parameters
    every request needs (Azure's `api-key` and `api-version`) live here, on the client, so
    no adapter has to know about them."""
    headers = {"User-Agent": USER_AGENT}
    key = settings.api_key.get_secret_value()
    if key and settings.api_key_header:
        headers[settings.api_key_header] = key
    elif key:
        headers["Authorization"] = f"Bearer {key}"
    # httpx bounds each read, not the request: HttpApi enforces the total deadline between
    # reads, so no single read may outlast it either
    deadline = settings.request_deadline_s
    return httpx.Client(
        base_url=settings.api_base + "/",
        headers=headers,
        params=settings.api_params,
        timeout=httpx.Timeout(min(settings.http_timeout_s, deadline), connect=min(10.0, deadline)),
        limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
    )


def tool_specs_for(registry: ToolRegistry, style: str) -> Any:
    def specs(job: JobRecord) -> list[dict[str, Any]]:
        tools = registry.select(job.request.tools)
        if style in ("responses", "agents"):  # both take the flat function shape
            return [t.responses_spec() for t in tools]
        return [t.assistants_spec() for t in tools]

    return specs


def make_adapter(
    settings: Settings,
    client: httpx.Client,
    registry: ToolRegistry = REGISTRY,
    hook: Any = None,
    budget: Any = None,
    conversations: Conversations | None = None,
) -> Adapter:
    specs = tool_specs_for(registry, settings.api_style)
    bounds = Bounds.from_settings(settings)
    if settings.api_style == "responses":
        adapter: Adapter = ResponsesAdapter(
            client,
            model=settings.model,
            tool_specs=specs,
            hook=hook,
            budget=budget,
            conversations=conversations or Always(settings.responses_conversations),
            bounds=bounds,
        )
        return adapter
    if settings.api_style == "agents":
        from worker.adapters.agents import AgentsAdapter

        return AgentsAdapter(
            client,
            agent_id=settings.agent_id,
            model=settings.model,
            tool_specs=specs,
            hook=hook,
            budget=budget,
            bounds=bounds,
        )
    return AssistantsAdapter(
        client,
        assistant_id=settings.assistant_id,
        tool_specs=specs,
        hook=hook,
        budget=budget,
        bounds=bounds,
    )


def poll_policy(settings: Settings) -> PollPolicy:
    """With webhooks on, the webhook says when a run ends: polls are only a slow safety net
    (every ASKQ_WEBHOOK_POLL_S, never sooner, whatever the server hints)."""
    if settings.webhooks_on:
        every = settings.webhook_poll_s
        return PollPolicy(min_s=every, max_s=every, floor_s=every)
    return PollPolicy(min_s=settings.poll_min_s, max_s=settings.poll_max_s)


@dataclass
class Runtime:
    settings: Settings
    redis: redis.Redis
    store: JobStore
    limits: LimitStore
    clock: ServerClock
    worker_id: str
    jobs: RunningJobs
    http: httpx.Client
    adapter: Adapter
    policy: PollPolicy
    rng: random.Random
    tools: ToolRegistry
    pid: int
    runs: RunIndex | None = None
    """Where recorded run ids are indexed for provider webhooks (None: webhooks off)."""
    job_threads: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(JOB_THREADS, thread_name_prefix="askq-job")
    )
    """Where the jobs of a packed task message run side by side."""
    request_counts: Counter[str] = field(default_factory=Counter)
    counts_lock: threading.Lock = field(default_factory=threading.Lock)

    def count_request(self, route: str, status: int) -> None:
        """Counted here, written by `flush_request_counts` at the end of each task: one
        round trip a task instead of one per API request."""
        with self.counts_lock:
            self.request_counts[f"{route} {status}"] += 1

    def flush_request_counts(self) -> None:
        with self.counts_lock:
            counts, self.request_counts = self.request_counts, Counter()
        if not counts:
            return
        pipe = self.redis.pipeline(transaction=False)
        for key, count in counts.items():
            pipe.hincrby(self.store.keys.api_requests, key, count)
        with contextlib.suppress(redis.RedisError):  # metrics: a lost count is no harm
            pipe.execute()

    def count_stray(self, run_id: str) -> None:
        with contextlib.suppress(redis.RedisError):
            self.redis.incr(self.store.keys.stray_runs)


_lock = threading.Lock()
_runtime: Runtime | None = None


def build_runtime(settings: Settings, registry: ToolRegistry = REGISTRY) -> Runtime:
    client = connect(settings)
    http = http_client(settings)
    beat = process_heartbeat(settings)
    runtime = Runtime(
        settings=settings,
        redis=client,
        store=JobStore(client, settings),
        limits=LimitStore(client, settings),
        clock=beat.clock,
        worker_id=beat.worker_id,
        jobs=beat.jobs,
        http=http,
        adapter=None,  # type: ignore[arg-type]
        policy=poll_policy(settings),
        rng=random.Random(),
        tools=registry,
        pid=os.getpid(),
        runs=RunIndex(client, settings) if settings.webhooks_on else None,
    )
    limits = runtime.limits
    runtime.adapter = make_adapter(
        settings,
        http,
        registry,
        runtime.count_request,
        lambda follow_up: limits.spend_requests(1, force=follow_up),
        ConversationSwitch(client, settings),
    )
    return runtime


def runtime() -> Runtime:
    """This process's runtime, built on first use after a fork."""
    global _runtime
    current = _runtime
    if current is not None and current.pid == os.getpid():
        return current
    with _lock:
        if _runtime is None or _runtime.pid != os.getpid():
            _runtime = build_runtime(get_settings())
        return _runtime
