"""The Prometheus exporter, scraped over HTTP while real workers run jobs against the emulator."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from producer.local_redis import LocalRedis, free_port
from producer.metrics import make_metrics_server
from tests.conftest import ASSISTANTS_ONLY, ROOT, Askq, wait_until
from worker.celery_app import QUEUES, create_app
from worker.keys import Keys
from worker.settings import Settings

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str) -> Samples:
    reply = httpx.get(url, timeout=10)
    assert reply.status_code == 200, reply.text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(reply.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


@contextmanager
def exporter(settings: Settings) -> Iterator[str]:
    server = make_metrics_server(settings, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/metrics"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_jobs_queues_due_and_overdue_then_a_worker_drains_them(
    make_askq: Callable[..., Askq],
) -> None:
    deployment = make_askq()
    with exporter(deployment.settings) as url:
        before = scrape(url)
        assert value(before, "askq_redis_up") == 1
        assert value(before, "askq_jobs", status="pending") == 0

        # no worker yet: submitted jobs wait in the due set, nothing is in any queue
        batch_id = deployment.client.submit_batch([f"What is {i} + 5?" for i in range(5)])
        samples = scrape(url)
        assert value(samples, "askq_jobs", status="pending") == 5
        assert value(samples, "askq_jobs", status="completed") == 0
        assert value(samples, "askq_due_jobs") == 5
        assert value(samples, "askq_overdue_jobs") == 0
        for queue in QUEUES:
            assert value(samples, "askq_queue_length", queue=queue) == 0

        # messages published with no worker running sit in their queues' lists
        app = create_app(deployment.settings)
        published = {"askq.start": 3, "askq.poll": 2, "askq.cancel": 1}
        with app.producer_or_acquire() as producer:
            for task, count in published.items():
                for n in range(count):
                    app.send_task(
                        task,
                        args=[f"job_nonexistent{n}"],
                        queue=task,
                        routing_key=task,
                        producer=producer,
                    )
        samples = scrape(url)
        for queue in QUEUES:
            expected = published.get(queue, 0)
            assert value(samples, "askq_queue_length", queue=queue) == expected, queue

        # two jobs due a minute ago and never claimed: what a dead fleet looks like
        r = deployment.client.store.redis
        keys = Keys(deployment.settings.key_prefix)
        stale = [m.decode() for m in r.zrange(keys.due, 0, 1)]
        r.zadd(keys.due, dict.fromkeys(stale, time.time() - 60), xx=True)
        assert value(scrape(url), "askq_overdue_jobs") == 2

        deployment.start_worker()
        deployment.client.wait(batch_id, timeout=60)

        served = {
            route.replace(" /v1/", " /", 1): n
            for route, n in deployment.emulator.stats()["requests"].items()
        }

        def counted_requests(samples: Samples) -> dict[str, float]:
            counted: dict[str, float] = {}
            for (name, labels), count in samples.items():
                if name == "askq_api_requests_total":
                    assert dict(labels)["status"] == "200", labels
                    route = dict(labels)["route"]
                    counted[route] = counted.get(route, 0) + count
            return counted

        def drained() -> Samples | None:
            samples = scrape(url)
            lengths = [value(samples, "askq_queue_length", queue=q) for q in QUEUES]
            idle = sum(lengths) == 0 and value(samples, "askq_due_jobs") == 0
            # a task writes its request counts as it ends, just after its job's last save
            return samples if idle and counted_requests(samples) == served else None

        samples = wait_until(drained, 30, what="empty queues, due set and every request counted")
        assert value(samples, "askq_jobs", status="completed") == 5
        assert value(samples, "askq_jobs", status="pending") == 0
        assert value(samples, "askq_jobs", status="running") == 0
        assert value(samples, "askq_overdue_jobs") == 0
        assert value(samples, "askq_inflight_runs") == 0

        # every request the workers made is counted, by route and status: the emulator's own
        # per-route counts (its routes carry the /v1 of the API base) agree
        counted = counted_requests(samples)
        assert counted == served
        assert counted[deployment.routes.create.replace(" /v1/", " /", 1)] == 5

        # latency: 5 completed jobs, cumulative buckets ending in +Inf
        hist = "askq_job_latency_seconds"
        assert value(samples, f"{hist}_count", status="completed") == 5
        assert value(samples, f"{hist}_bucket", status="completed", le="+Inf") == 5
        assert value(samples, f"{hist}_count", status="failed") == 0
        buckets = sorted(
            (float(dict(labels)["le"]), v)
            for (name, labels), v in samples.items()
            if name == f"{hist}_bucket" and dict(labels)["status"] == "completed"
        )
        counts = [v for _, v in buckets]
        assert counts == sorted(counts)
        # the jobs waited for a worker for a few seconds: no job is counted faster than that
        total_s = value(samples, f"{hist}_sum", status="completed")
        assert total_s > 5 * 0.2, total_s
        assert value(samples, f"{hist}_bucket", status="completed", le="0.5") == 0


@ASSISTANTS_ONLY
def test_inflight_runs_at_the_limit_and_jobs_waiting(make_askq: Callable[..., Askq]) -> None:
    deployment = make_askq(max_inflight=2)
    deployment.emulator.configure(run_time_s=2.0)
    deployment.start_worker()
    with exporter(deployment.settings) as url:
        batch_id = deployment.client.submit_batch([f"What is {i} * 3?" for i in range(6)])

        def saturated() -> Samples | None:
            samples = scrape(url)
            # slots are taken when a start is published, so wait for the runs themselves
            full = value(samples, "askq_inflight_runs") == 2
            running = value(samples, "askq_jobs", status="running") == 2
            waiting = value(samples, "askq_waiting_jobs") == 4
            return samples if full and running and waiting else None

        samples = wait_until(saturated, 20, what="2 runs in flight, 4 jobs waiting")
        assert value(samples, "askq_max_inflight") == 2
        assert value(samples, "askq_jobs", status="running") == 2
        assert value(samples, "askq_jobs", status="pending") == 4

        deployment.client.wait(batch_id, timeout=60)
        samples = scrape(url)
        assert value(samples, "askq_inflight_runs") == 0
        assert value(samples, "askq_waiting_jobs") == 0
        assert value(samples, "askq_jobs", status="completed") == 6
        # a later job waited behind earlier ones: at least one took over 2 runs (4 s)
        slow = value(samples, "askq_job_latency_seconds_bucket", status="completed", le="2.5")
        assert slow < 6


@ASSISTANTS_ONLY
def test_failed_jobs_are_counted_by_status(askq: Askq) -> None:
    with exporter(askq.settings) as url:
        ids = [askq.client.ask("[fail] now"), askq.client.ask("What is 1 + 1?")]
        for job_id in ids:
            askq.client.wait(job_id, timeout=30)
        samples = scrape(url)
    assert value(samples, "askq_jobs", status="failed") == 1
    assert value(samples, "askq_jobs", status="completed") == 1
    assert value(samples, "askq_job_latency_seconds_count", status="failed") == 1
    assert value(samples, "askq_job_latency_seconds_count", status="completed") == 1


@pytest.mark.timeout(60)
def test_redis_down_reports_zero_and_the_exporter_keeps_serving() -> None:
    """`serve_metrics` in its own process, as `askq metrics` runs it: Redis stops, scrapes
    still answer 200 with askq_redis_up 0, and it recovers when Redis is back."""
    with LocalRedis() as server:
        port = free_port()
        code = (
            "from producer.metrics import serve_metrics; "
            "from worker.settings import load_settings; "
            f"serve_metrics(load_settings(redis_url={server.url!r}), '127.0.0.1', {port})"
        )
        process = subprocess.Popen(
            [sys.executable, "-c", code],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}/metrics"
        try:

            def answers() -> Samples | None:
                assert process.poll() is None, process.stdout.read() if process.stdout else ""
                try:
                    return scrape(url)
                except httpx.TransportError:
                    return None

            samples = wait_until(answers, 20, what="the exporter to listen")
            assert value(samples, "askq_redis_up") == 1
            assert value(samples, "askq_scrape_errors_total") == 0

            server.stop()
            for errors in (1, 2):
                started = time.monotonic()
                samples = scrape(url)
                elapsed = time.monotonic() - started
                assert value(samples, "askq_redis_up") == 0
                assert value(samples, "askq_scrape_errors_total") == errors
                assert ("askq_jobs", frozenset({("status", "pending")})) not in samples
                assert elapsed < 5, f"a scrape with Redis down took {elapsed:.1f} s"
            assert process.poll() is None

            server.start()
            samples = wait_until(
                lambda: (s := scrape(url)) and value(s, "askq_redis_up") == 1 and s,
                20,
                what="the exporter to see Redis again",
            )
            assert value(samples, "askq_jobs", status="pending") == 0
        finally:
            process.terminate()
            process.wait(timeout=10)
