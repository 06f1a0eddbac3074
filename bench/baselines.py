"""The alternatives askq is measured against, speaking the same Assistants v2 wire protocol
(create a thread with the question, create a run, poll the run, read the run's messages), so
requests per job compare fairly.

- `tutorial`: the classic loop — create, then `while True: retrieve; sleep(1)` — one job per
  thread of a thread pool as large as the askq worker's.
- `asyncio`: the best single-process alternative — asyncio (uvloop) + httpx, a semaphore
  bounding the runs in flight, polling with a chosen policy (askq's back-off by default).

Poll policies (`poll=`):
- `sdk`: what the official SDK's `create_and_poll` does: retrieve at once, then sleep the
  server's `openai-poll-after-ms` hint, or 1 s without one (so with no hint it is the
  tutorial loop).
- `askq`: `worker.machine.PollPolicy` exactly as the worker uses it (first look after
  `min_s`, back-off ×1.5 to `max_s`, jitter; a hint wins, never polled sooner).
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx
import psutil
import uvloop

from bench.infra import ASSISTANT, Sampler, Stack, latency_summary
from bench.workloads import question
from worker.machine import PollPolicy

BETA = {"OpenAI-Beta": "assistants=v2"}
TERMINAL = {"completed", "failed", "cancelled", "expired", "incomplete"}


def hint_of(response: httpx.Response) -> float | None:
    raw = response.headers.get("openai-poll-after-ms")
    return float(raw) / 1000.0 if raw is not None else None


@dataclass
class Tally:
    requests: Counter[str] = field(default_factory=Counter)
    overhead: list[float] = field(default_factory=list)
    e2e: list[float] = field(default_factory=list)
    completed: int = 0
    failed: int = 0
    last_done: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, route: str) -> None:
        with self.lock:
            self.requests[route] += 1

    def done(self, t_submit: float, t_run: float, t_done: float, run_time: float, ok: bool) -> None:
        with self.lock:
            if ok:
                self.completed += 1
                self.overhead.append(t_done - t_run - run_time)
                self.e2e.append(t_done - t_submit - run_time)
            else:
                self.failed += 1
            self.last_done = max(self.last_done, t_done)


def _thread_body(q: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": q}]}


# -- the tutorial loop, in a thread pool ------------------------------------------------


def _tutorial_job(
    http: httpx.Client, q: str, run_time: float, tally: Tally, t_submit: float, deadline: float
) -> None:
    thread = http.post("threads", json=_thread_body(q), headers=BETA).json()
    tally.count("POST /threads")
    run = http.post(
        f"threads/{thread['id']}/runs", json={"assistant_id": ASSISTANT}, headers=BETA
    ).json()
    tally.count("POST /runs")
    t_run = time.time()
    while time.monotonic() < deadline:
        run = http.get(f"threads/{thread['id']}/runs/{run['id']}", headers=BETA).json()
        tally.count("GET /runs/{id}")
        if run["status"] in TERMINAL:
            break
        time.sleep(1)
    http.get(
        f"threads/{thread['id']}/messages",
        params={"run_id": run["id"], "order": "asc", "limit": 100},
        headers=BETA,
    ).json()
    tally.count("GET /messages")
    tally.done(t_submit, t_run, time.time(), run_time, run["status"] == "completed")


def run_tutorial(
    stack: Stack,
    run_times: list[float],
    *,
    threads: int,
    poll_after_ms: int | None = None,
    timeout_s: float = 600.0,
) -> dict[str, Any]:
    stack.reset_emulator(run_time_s=run_times[0], poll_after_ms=poll_after_ms)
    tally = Tally()
    http = httpx.Client(
        base_url=stack.emulator.url + "/",
        timeout=30,
        limits=httpx.Limits(max_connections=threads, max_keepalive_connections=threads),
    )
    deadline = time.monotonic() + timeout_s
    groups = {"bench": [psutil.Process().pid], **_emu_group(stack)}
    with Sampler(groups, None) as sampler:
        t0 = time.time()
        with ThreadPoolExecutor(threads) as pool:
            futures = [
                pool.submit(_tutorial_job, http, question(i, t), t, tally, t0, deadline)
                for i, t in enumerate(run_times)
            ]
            for f in futures:
                f.result()
    http.close()
    return _result("tutorial", stack, run_times, tally, t0, sampler, threads, poll_after_ms)


# -- asyncio + httpx with a semaphore ---------------------------------------------------


def _policy_delay(
    poll: str, policy: PollPolicy, polls: int, hint: float | None, rng: random.Random
) -> float:
    if poll == "sdk":
        return hint if hint is not None else 1.0
    return policy.delay(polls, hint, rng)


async def _async_job(
    http: httpx.AsyncClient,
    sem: asyncio.Semaphore,
    q: str,
    run_time: float,
    tally: Tally,
    t_submit: float,
    poll: str,
    policy: PollPolicy,
    rng: random.Random,
    deadline: float,
    delay_s: float = 0.0,
) -> None:
    if delay_s:
        await asyncio.sleep(delay_s)
        t_submit += delay_s
    async with sem:
        r = await http.post("threads", json=_thread_body(q), headers=BETA)
        tally.count("POST /threads")
        thread = r.json()
        r = await http.post(
            f"threads/{thread['id']}/runs", json={"assistant_id": ASSISTANT}, headers=BETA
        )
        tally.count("POST /runs")
        run = r.json()
        t_run = time.time()
        hint = hint_of(r)
        polls = 0
        # the SDK looks once at once; askq's policy waits its first delay
        if poll == "askq":
            await asyncio.sleep(_policy_delay(poll, policy, polls, hint, rng))
        while time.monotonic() < deadline:
            r = await http.get(f"threads/{thread['id']}/runs/{run['id']}", headers=BETA)
            tally.count("GET /runs/{id}")
            run = r.json()
            polls += 1
            if run["status"] in TERMINAL:
                break
            await asyncio.sleep(_policy_delay(poll, policy, polls, hint_of(r), rng))
        await http.get(
            f"threads/{thread['id']}/messages",
            params={"run_id": run["id"], "order": "asc", "limit": 100},
            headers=BETA,
        )
        tally.count("GET /messages")
        tally.done(t_submit, t_run, time.time(), run_time, run["status"] == "completed")


async def _async_main(
    url: str,
    run_times: list[float],
    inflight: int,
    poll: str,
    tally: Tally,
    timeout_s: float,
    rate: float | None,
    pool: int,
) -> float:
    policy = PollPolicy(min_s=0.5, max_s=8.0)
    rng = random.Random(1)
    sem = asyncio.Semaphore(inflight)
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(
        base_url=url + "/",
        timeout=30,
        limits=httpx.Limits(max_connections=pool, max_keepalive_connections=pool),
    ) as http:
        t0 = time.time()
        await asyncio.gather(
            *(
                _async_job(
                    http,
                    sem,
                    question(i, t),
                    t,
                    tally,
                    t0,
                    poll,
                    policy,
                    rng,
                    deadline,
                    i / rate if rate else 0.0,
                )
                for i, t in enumerate(run_times)
            )
        )
    return t0


def run_asyncio(
    stack: Stack,
    run_times: list[float],
    *,
    inflight: int = 256,
    poll: str = "askq",
    poll_after_ms: int | None = None,
    timeout_s: float = 600.0,
    label: str | None = None,
    rate: float | None = None,
    pool: int = 64,
) -> dict[str, Any]:
    """`pool`: httpx's connection pool size (its async pool slows down with hundreds of
    connections: `python -m bench throughput` tries a few and keeps the fastest)."""
    stack.reset_emulator(run_time_s=run_times[0], poll_after_ms=poll_after_ms)
    tally = Tally()
    groups = {"bench": [psutil.Process().pid], **_emu_group(stack)}
    # uvloop: the fastest event loop this machine has (+12% jobs/s over asyncio's own here)
    with Sampler(groups, None) as sampler, asyncio.Runner(loop_factory=uvloop.new_event_loop) as rr:
        t0 = rr.run(
            _async_main(stack.emulator.url, run_times, inflight, poll, tally, timeout_s, rate, pool)
        )
    name = label or f"asyncio-{poll}"
    out = _result(name, stack, run_times, tally, t0, sampler, inflight, poll_after_ms)
    out["poll"] = poll
    out["http_pool"] = pool
    out["arrival_rate"] = rate
    return out


# -- shared -----------------------------------------------------------------------------


def _emu_group(stack: Stack) -> dict[str, list[int]]:
    pid = stack.emulator_pid
    return {"emulator": [pid]} if pid else {}


def _result(
    name: str,
    stack: Stack,
    run_times: list[float],
    tally: Tally,
    t0: float,
    sampler: Sampler,
    width: int,
    poll_after_ms: int | None,
) -> dict[str, Any]:
    n = len(run_times)
    wall = tally.last_done - t0
    stats = stack.control.stats()
    emu = "emulator" in sampler.procs
    return {
        "system": name,
        "jobs": n,
        "completed": tally.completed,
        "finished_all": tally.completed + tally.failed == n,
        "concurrency": width,
        "poll_after_ms": poll_after_ms,
        "wall_s": wall,
        "machine_busy_cores_mean": sampler.machine_busy() / max(wall, 1e-9),
        "jobs_per_s": tally.completed / wall if wall > 0 else None,
        "overhead_s": latency_summary(tally.overhead),
        "e2e_overhead_s": latency_summary(tally.e2e),
        "requests_per_job": {k: v / n for k, v in sorted(stats["requests"].items())},
        "total_requests_per_job": sum(stats["requests"].values()) / n,
        "client_requests_per_job": {k: v / n for k, v in sorted(tally.requests.items())},
        "max_active_runs": stats["max_active_runs"],
        "bench_cpu_s_per_job": sampler.cpu_seconds("bench") / n,
        "bench_peak_rss_mb": sampler.peak_rss["bench"] / 2**20,
        "emulator_cpu_cores_mean": sampler.cpu_seconds("emulator") / max(wall, 1e-9)
        if emu
        else None,
        "emulator_cpu_cores_peak": sampler.busiest("emulator") if emu else None,
    }
