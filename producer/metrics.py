"""`askq metrics`: a Prometheus exporter that reads askq's state from Redis on each scrape.

It holds no state of its own (every number is read from Redis when Prometheus asks, in one
pipelined round trip), so one replica is enough and a restart loses nothing. When Redis does
not answer, a scrape still succeeds and reports `askq_redis_up 0`: an exporter that crashes
or times out would hide the one thing worth paging about.

The numbers are global (every worker writes to the same Redis), so they mean the same
whichever worker or host the exporter runs beside. docs/operations.md lists every metric with
the alert rules built on them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from wsgiref.simple_server import WSGIServer, make_server

import redis
from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import ThreadingWSGIServer, _SilentHandler
from redis.backoff import NoBackoff
from redis.retry import Retry

from worker import lua
from worker.celery_app import QUEUES
from worker.keys import JOB_LATENCY_BUCKETS, Keys
from worker.settings import Settings
from worker.states import TERMINAL, JobStatus

log = logging.getLogger("askq.metrics")

OVERDUE_AFTER_S = 30.0
"""A due entry this far in the past was not claimed by any worker's pump (a pump claims due
entries within a second, and a claimed entry is re-scored to its lease end, in the future):
no worker is running, or every one is stuck. Leases past their end count too: the sweep has
not re-dispatched their job."""

REDIS_TIMEOUT_S = 5.0
"""Bounds one scrape's wait on Redis, below Prometheus' default 10 s scrape timeout."""


@dataclass
class Snapshot:
    """What one scrape read from Redis."""

    counts: dict[str, int]
    queue_lengths: dict[str, int]
    due: int
    overdue: int
    inflight: int
    waiting: int
    api_requests: dict[tuple[str, str], int]
    latency: dict[str, dict[str, float]] = field(default_factory=dict)
    webhooks: dict[str, int] = field(default_factory=dict)
    stray_runs: int = 0
    workers: int = 0


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _int_hash(raw: dict[bytes, bytes]) -> dict[str, int]:
    return {_text(key): int(value) for key, value in raw.items()}


def exporter_redis(settings: Settings) -> redis.Redis:
    """A client that fails fast: one reconnect attempt (a Redis restart leaves a dead pooled
    connection behind), then the scrape reports Redis down instead of hanging."""
    return redis.Redis.from_url(
        settings.redis_url,
        socket_timeout=REDIS_TIMEOUT_S,
        socket_connect_timeout=REDIS_TIMEOUT_S / 2,
        retry=Retry(NoBackoff(), 1),
        health_check_interval=15,
    )


class AskqCollector:
    """A prometheus-client custom collector: each `collect()` is one Redis round trip."""

    def __init__(
        self,
        settings: Settings,
        client: redis.Redis | None = None,
    ) -> None:
        self.settings = settings
        self.keys = Keys(settings.key_prefix)
        self.redis = client if client is not None else exporter_redis(settings)
        self._overdue = self.redis.register_script(lua.OVERDUE)
        self.scrape_errors = 0
        # the HTTP server may scrape from several threads at once
        self._errors_lock = threading.Lock()

    def read(self) -> Snapshot:
        """Everything in one pipelined round trip (a handful of O(1) or O(log n) commands,
        plus three small hashes). The Celery queues are lists named after their queue in the
        broker's DB, which is askq's DB (one ASKQ_REDIS_URL); kombu would add priority
        sub-lists only for tasks sent with a priority, which askq never does."""
        k = self.keys
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(k.counts)
        for queue in QUEUES:
            pipe.llen(queue)
        pipe.zcard(k.due)
        self._overdue(keys=[k.due], args=[OVERDUE_AFTER_S], client=pipe)
        pipe.zcard(k.inflight)
        pipe.zcard(k.waiting)
        pipe.hgetall(k.api_requests)
        pipe.hgetall(k.job_latency)
        pipe.hgetall(k.webhook_events)
        pipe.get(k.stray_runs)
        pipe.zcard(k.workers)
        replies = pipe.execute()
        counts, *rest = replies
        lengths = rest[: len(QUEUES)]
        due, overdue, inflight, waiting, api_raw, latency_raw, webhooks, strays, workers = rest[
            len(QUEUES) :
        ]
        api: dict[tuple[str, str], int] = {}
        for name, value in api_raw.items():
            route, _, status = _text(name).rpartition(" ")
            api[(route, status)] = int(value)
        latency: dict[str, dict[str, float]] = {}
        for name, value in latency_raw.items():
            status, _, part = _text(name).rpartition(" ")
            latency.setdefault(status, {})[part] = float(value)
        return Snapshot(
            counts=_int_hash(counts),
            queue_lengths=dict(zip(QUEUES, (int(n) for n in lengths), strict=True)),
            due=int(due),
            overdue=int(overdue),
            inflight=int(inflight),
            waiting=int(waiting),
            api_requests=api,
            latency=latency,
            webhooks=_int_hash(webhooks),
            stray_runs=int(strays or 0),
            workers=int(workers),
        )

    def collect(self) -> Iterator[Metric]:
        started = time.perf_counter()
        snapshot: Snapshot | None
        try:
            snapshot = self.read()
        except (redis.RedisError, OSError) as exc:
            snapshot = None
            with self._errors_lock:
                self.scrape_errors += 1
            log.warning("metrics: cannot read Redis (%s)", exc)
        up = GaugeMetricFamily(
            "askq_redis_up", "1 when this scrape could read askq's Redis, else 0."
        )
        up.add_metric([], 1 if snapshot is not None else 0)
        yield up
        errors = CounterMetricFamily(
            "askq_scrape_errors",
            "Scrapes of this exporter that failed to read Redis, since it started.",
        )
        errors.add_metric([], self.scrape_errors)
        yield errors
        limit = GaugeMetricFamily(
            "askq_max_inflight",
            "ASKQ_MAX_INFLIGHT as this exporter reads it (set it like the workers').",
        )
        limit.add_metric([], self.settings.max_inflight)
        yield limit
        if snapshot is not None:
            yield from self.families(snapshot)
        duration = GaugeMetricFamily(
            "askq_scrape_duration_seconds", "How long this scrape took to read Redis."
        )
        duration.add_metric([], time.perf_counter() - started)
        yield duration

    def families(self, snap: Snapshot) -> Iterator[Metric]:
        jobs = GaugeMetricFamily(
            "askq_jobs",
            "Jobs by status. Live statuses go up and down; terminal ones are totals since the "
            "store began (records expire after ASKQ_RESULT_TTL_S, the totals stay).",
            labels=["status"],
        )
        for status in JobStatus:
            jobs.add_metric([status.value], snap.counts.get(status.value, 0))
        yield jobs

        queues = GaugeMetricFamily(
            "askq_queue_length",
            "Task messages waiting in each Celery queue (taken messages are not counted).",
            labels=["queue"],
        )
        for queue, length in snap.queue_lengths.items():
            queues.add_metric([queue], length)
        yield queues

        yield GaugeMetricFamily(
            "askq_due_jobs",
            "Entries of the due set: jobs waiting for their next task, or holding a lease.",
            value=snap.due,
        )
        yield GaugeMetricFamily(
            "askq_overdue_jobs",
            f"Due entries more than {OVERDUE_AFTER_S:g} s in the past: no worker's pump has "
            "claimed them (no worker running, or stuck).",
            value=snap.overdue,
        )
        yield GaugeMetricFamily(
            "askq_inflight_runs",
            "Remote runs holding an in-flight slot, across all workers.",
            value=snap.inflight,
        )
        yield GaugeMetricFamily(
            "askq_waiting_jobs",
            "Pending jobs queued for a free in-flight slot.",
            value=snap.waiting,
        )

        requests = CounterMetricFamily(
            "askq_api_requests",
            "Requests workers made to the assistant API, by route and HTTP status "
            "(0: no response: timeout or connection error).",
            labels=["route", "status"],
        )
        for (route, code), count in sorted(snap.api_requests.items()):
            requests.add_metric([route, code], count)
        yield requests

        webhooks = CounterMetricFamily(
            "askq_webhook_events",
            "Provider webhook deliveries `askq webhooks` handled, by outcome: received "
            "(verified), rejected (bad signature, timestamp or body), ignored (an event type "
            "with nothing to read), duplicate (a webhook-id seen before), unmatched (an id no "
            "job recorded), matched (a job was poked).",
            labels=["outcome"],
        )
        for outcome in ("received", "rejected", "ignored", "duplicate", "unmatched", "matched"):
            webhooks.add_metric([outcome], snap.webhooks.get(outcome, 0))
        yield webhooks

        yield self.latency_histogram(snap.latency)
        yield CounterMetricFamily(
            "askq_stray_runs_cancelled",
            "Runs askq cancelled because no job could record them: a creation the server "
            "carried out after askq gave up on it, or a run made by a task that lost its claim.",
            value=snap.stray_runs,
        )
        yield GaugeMetricFamily(
            "askq_workers",
            "Worker processes with a heartbeat in Redis (dead ones leave within "
            "ASKQ_WORKER_DEAD_AFTER_S and a beat).",
            value=snap.workers,
        )

    @staticmethod
    def latency_histogram(latency: dict[str, dict[str, float]]) -> HistogramMetricFamily:
        """The worker keeps one counter per bucket (not cumulative, so one HINCRBY records a
        job); Prometheus wants cumulative buckets ending in `+Inf`."""
        histogram = HistogramMetricFamily(
            "askq_job_latency_seconds",
            "Time from submission to a terminal status, by that status.",
            labels=["status"],
        )
        inf = float("inf")
        bounds = [*JOB_LATENCY_BUCKETS, inf]
        for status in sorted(s.value for s in TERMINAL):
            fields = latency.get(status, {})
            per_bucket = [0.0] * len(bounds)
            for part, value in fields.items():
                try:
                    upper = float(part)
                except ValueError:
                    continue  # `sum`
                # a bound of another layout (a worker of another version) lands in the next
                # bucket up: never lost, at worst counted as slower than it was
                index = next(i for i, bound in enumerate(bounds) if upper <= bound)
                per_bucket[index] += value
            cumulative: list[tuple[str, float]] = []
            total = 0.0
            for bound, count in zip(bounds, per_bucket, strict=True):
                total += count
                cumulative.append(("+Inf" if bound == inf else repr(bound), total))
            histogram.add_metric([status], cumulative, sum_value=fields.get("sum", 0.0))
        return histogram


def registry_for(settings: Settings, client: redis.Redis | None = None) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(AskqCollector(settings, client))
    return registry


def make_metrics_server(settings: Settings, host: str, port: int) -> WSGIServer:
    """An HTTP server (a thread per scrape) answering `/metrics` (any path, like
    prometheus-client's own); call `serve_forever()` on it, `shutdown()` to stop."""
    app = make_wsgi_app(registry_for(settings))
    return make_server(host, port, app, ThreadingWSGIServer, handler_class=_SilentHandler)


def serve_metrics(settings: Settings, host: str, port: int) -> None:
    """Serve the exporter until interrupted (the `askq metrics` command)."""
    server = make_metrics_server(settings, host, port)
    log.info("askq metrics on http://%s:%d/metrics", host, server.server_port)
    try:
        server.serve_forever()
    finally:
        server.server_close()
