"""One measured askq run: fresh Redis DB, N worker processes, a batch, every figure.

Latency overhead of a job = when askq stored the answer − when the run was created − the
run's own duration (the emulator's run time): what polling and task scheduling add. The
end-to-end figure (from submission) is reported too; in a batch larger than the in-flight
limit it mostly measures queueing, so the comparison with baselines uses the first one.
"""

from __future__ import annotations

import time
from typing import Any

import redis

from bench.infra import Sampler, Stack, latency_summary, redis_used_memory
from bench.workloads import question, run_time_of
from producer.client import Client
from worker.settings import load_settings
from worker.states import JobStatus

ARRIVAL_TICK_S = 0.5


def job_key_sample(url: str, prefix: str = "askq:job:", limit: int = 200) -> dict[str, float]:
    """Mean MEMORY USAGE of up to `limit` job hashes."""
    client = redis.Redis.from_url(url)
    try:
        keys = [k for k in client.scan_iter(match=f"{prefix}*", count=1000)][:limit]
        sizes = [client.memory_usage(k, samples=0) or 0 for k in keys]
        return {"keys": len(keys), "mean_bytes": sum(sizes) / len(sizes) if sizes else 0.0}
    finally:
        client.close()


def command_calls(url: str) -> dict[str, int]:
    """Redis INFO commandstats: calls per command (server-wide, so one run at a time)."""
    client = redis.Redis.from_url(url)
    try:
        return {
            k.removeprefix("cmdstat_"): int(v["calls"])
            for k, v in client.info("commandstats").items()
        }
    finally:
        client.close()


def poll_lateness(url: str, prefix: str = "askq") -> dict[str, Any]:
    """The worker's poll-lateness histogram (`askq:poll-lateness`: polls taken that long after
    their due time) and the bucket bounds its 50th and 95th percentiles fall in."""
    client = redis.Redis.from_url(url)
    try:
        raw = client.hgetall(f"{prefix}:poll-lateness")
    finally:
        client.close()
    hist = sorted((float(k), int(v)) for k, v in raw.items())  # float("+Inf") sorts last
    total = sum(n for _, n in hist)

    def quantile(q: float) -> float | None:
        seen = 0
        for bound, n in hist:
            seen += n
            if seen >= q * total:
                return bound
        return None

    return {
        "histogram": {repr(b): n for b, n in hist},
        "polls": total,
        "p50_le": quantile(0.5),
        "p95_le": quantile(0.95),
    }


def run_askq(
    stack: Stack,
    run_times: list[float],
    *,
    workers: int = 1,
    concurrency: int = 16,
    poll_after_ms: int | None = None,
    env: dict[str, str] | None = None,
    timeout_s: float = 600.0,
    label: str = "askq",
    app: str = "worker",
    rate: float | None = None,
    redis_url: str | None = None,
    pool: str = "threads",
) -> dict[str, Any]:
    n = len(run_times)
    env = dict(env or {})
    url = redis_url or stack.fresh_db()
    stack.reset_emulator(run_time_s=run_times[0], poll_after_ms=poll_after_ms)
    started = stack.start_workers(workers, url, concurrency, env, app, pool)
    settings = load_settings(
        redis_url=url,
        api_base=stack.emulator.url,
        assistant_id="asst_bench",
        max_inflight=int(env.get("ASKQ_MAX_INFLIGHT", "256")),
    )
    client = Client(settings)
    emu_pid = stack.emulator_pid
    groups = {
        "worker": [w.process.pid for w in started],
        "redis": [stack.redis_pid],
        **({"emulator": [emu_pid]} if emu_pid else {}),
    }
    mem_before = redis_used_memory(url)
    calls_before = command_calls(url)
    peak_live = 0
    mem_at_peak_live = mem_before
    items = [question(i, t) for i, t in enumerate(run_times)]
    # Paced arrival (`rate` jobs/s, as sub-batches every ARRIVAL_TICK_S) measures polling
    # without the CPU burst of a whole batch arriving at once; None submits one batch.
    chunk = n if rate is None else max(1, round(rate * ARRIVAL_TICK_S))
    batch_ids: list[str] = []
    mem_submitted = mem_before
    submit_s = 0.0
    try:
        with Sampler(groups, url) as sampler:
            t0 = time.time()
            deadline = time.monotonic() + timeout_s
            done = False
            sent = 0
            while time.monotonic() < deadline:
                while sent < n and (rate is None or time.time() - t0 >= sent / rate):
                    batch_ids.append(client.submit_batch(items[sent : sent + chunk]))
                    sent = min(n, sent + chunk)
                    if sent == n:
                        submit_s = time.time() - t0
                        mem_submitted = redis_used_memory(url)
                statuses = [client.status(b) for b in batch_ids]
                live = sum(st.in_flight for st in statuses)  # type: ignore[union-attr]
                if live > peak_live:
                    peak_live = live
                    mem_at_peak_live = redis_used_memory(url)
                if sent == n and all(st.done for st in statuses):  # type: ignore[union-attr]
                    done = True
                    break
                time.sleep(0.1 if rate else 0.2)
            t_end = time.time()
        records = [r for b in batch_ids for r in client.batch_store.batch_records(b)]
        mem_after = redis_used_memory(url)
        key_sizes = job_key_sample(url)
        lateness = poll_lateness(url)
        calls_after = command_calls(url)
        stats = stack.control.stats()
    finally:
        client.close()
        stack.stop_workers(started)
    completed = [r for r in records if r.status is JobStatus.COMPLETED]
    finished = [r for r in records if r.finished_at is not None]
    last = max((r.finished_at.timestamp() for r in finished), default=t_end)  # type: ignore[union-attr]
    overhead, e2e = [], []
    for r in completed:
        rt = run_time_of(r.request.question or "")
        assert r.finished_at is not None
        if r.started_at is not None:
            overhead.append(r.finished_at.timestamp() - r.started_at.timestamp() - rt)
        e2e.append(r.finished_at.timestamp() - r.created_at.timestamp() - rt)
    wall = last - t0
    requests = stats["requests"]
    return {
        "system": label,
        "jobs": n,
        "completed": len(completed),
        "finished_all": done,
        "workers": workers,
        "concurrency": concurrency,
        "pool": pool,
        "env": env,
        "poll_after_ms": poll_after_ms,
        "arrival_rate": rate,
        "wall_s": wall,
        "machine_busy_cores_mean": sampler.machine_busy() / max(wall, 1e-9),
        "submit_s": submit_s,
        "jobs_per_s": len(completed) / wall if wall > 0 else None,
        "overhead_s": latency_summary(overhead),
        "e2e_overhead_s": latency_summary(e2e),
        "requests_per_job": {k: v / n for k, v in sorted(requests.items())},
        "total_requests_per_job": sum(requests.values()) / n,
        "redis_commands_per_job": {
            k: round((v - calls_before.get(k, 0)) / n, 2)
            for k, v in sorted(calls_after.items())
            if v - calls_before.get(k, 0) > 0
        },
        "status_codes": stats["status_codes"],
        "max_active_runs": stats["max_active_runs"],
        "runs_created": stats["runs_created"],
        "worker_cpu_s_per_job": sampler.cpu_seconds("worker") / n,
        "worker_cpu_cores_peak": sampler.busiest("worker"),
        "worker_cpu_cores_mean": sampler.cpu_seconds("worker") / max(wall, 1e-9),
        "redis_cpu_cores_mean": sampler.cpu_seconds("redis") / max(wall, 1e-9),
        "redis_cpu_cores_peak": sampler.busiest("redis"),
        "emulator_cpu_cores_mean": (
            sampler.cpu_seconds("emulator") / max(wall, 1e-9) if emu_pid else None
        ),
        "emulator_cpu_cores_peak": sampler.busiest("emulator") if emu_pid else None,
        "worker_peak_rss_mb": sampler.peak_rss["worker"] / 2**20,
        "redis_bytes_per_pending_job": (mem_submitted - mem_before) / n,
        # every submitted job has a record; at the peak most of them are live (scale test)
        "redis_bytes_per_job_at_peak_live": (mem_at_peak_live - mem_before) / n,
        "peak_live_jobs": peak_live,
        "redis_bytes_per_finished_job": (mem_after - mem_before) / n,
        "job_hash_memory_usage_bytes": key_sizes["mean_bytes"],
        "redis_peak_used_memory_mb": sampler.peak_redis_mem / 2**20,
        "poll_lateness_s": lateness,
    }
