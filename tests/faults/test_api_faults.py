"""API faults and global limits, with real worker processes against the emulator."""

from __future__ import annotations

import bisect
from collections.abc import Callable

import pytest

from tests.conftest import Askq
from worker.models import JobRequest
from worker.states import JobStatus

pytestmark = pytest.mark.slow


def most_in_window(times: list[float], window: float) -> int:
    ordered = sorted(times)
    return max(
        (bisect.bisect_right(ordered, t + window) - i for i, t in enumerate(ordered)), default=0
    )


def test_429s_and_500s_are_retried_within_the_rate_limit(make_askq: Callable[..., Askq]) -> None:
    rpm = 1200  # 20 requests a second, burst 20
    deployment = make_askq(rate_limit_rpm=rpm, max_api_retries=15, poll_min_s=0.2, poll_max_s=1.0)
    deployment.emulator.configure(
        fail_429=0.3, fail_500=0.1, retry_after_s=0.2, seed=4, run_time_s=0.5
    )
    deployment.start_worker(concurrency=8)
    deployment.start_worker(concurrency=8)
    batch_id = deployment.client.submit_batch([f"What is {i} + 11?" for i in range(30)])
    final = deployment.client.wait(batch_id, timeout=150)
    assert final.completed == 30, final  # type: ignore[union-attr]
    stats = deployment.emulator.stats()
    assert stats["status_codes"].get("429", 0) > 10 and stats["status_codes"].get("500", 0) > 3
    assert set(stats["runs_by_job"].values()) == {1}
    times = stats["request_times"]
    # the documented bound: one second's worth of burst, plus the follow-up requests that
    # complete a step already begun (at most one per task running: 2 workers x 8 threads)
    burst = max(1, rpm // 60) + 16
    for window in (1.0, 5.0, 10.0):
        seen = most_in_window(times, window)
        allowed = burst + window * rpm / 60
        print(
            f"\nrate limit {rpm}/min: at most {seen} requests in {window:.0f} s "
            f"(allowed {allowed:.0f})"
        )
        assert seen <= allowed + 1


def test_in_flight_limit_holds_across_four_workers(make_askq: Callable[..., Askq]) -> None:
    deployment = make_askq(max_inflight=20, poll_min_s=0.2, poll_max_s=0.5)
    deployment.emulator.configure(run_time_s=0.6)
    for _ in range(4):
        deployment.start_worker(concurrency=8)
    batch_id = deployment.client.submit_batch([f"What is {i} - 1?" for i in range(300)])
    final = deployment.client.wait(batch_id, timeout=150)
    assert final.completed == 300  # type: ignore[union-attr]
    stats = deployment.emulator.stats()
    print(f"\nmax active runs seen by the API: {stats['max_active_runs']} (limit 20)")
    assert 10 <= stats["max_active_runs"] <= 20
    assert deployment.client.store.redis.zcard(deployment.client.store.keys.inflight) == 0
    waiting = deployment.client.store.redis.zcard(deployment.client.store.keys.waiting)
    assert waiting == 0


def test_jobs_on_one_thread_run_in_order_without_busy_errors(
    askq: Askq,
) -> None:
    first = askq.client.wait(askq.client.ask("What is 0 + 0?"), timeout=30)
    thread = first.thread_id  # type: ignore[union-attr]
    requests = [
        JobRequest(question=f"What is {i} + 100?", thread_id=thread, custom_id=str(i))
        for i in range(100)
    ]
    batch_id = askq.client.submit_batch(requests)
    final = askq.client.wait(batch_id, timeout=180)
    assert final.completed == 100  # type: ignore[union-attr]
    results = list(askq.client.results(batch_id))
    finished = [r.finished_at for r in results]
    assert finished == sorted(finished)  # type: ignore[type-var]
    assert [r.answer for r in results] == [f"{i} + 100 = {i + 100}" for i in range(100)]
    stats = askq.emulator.stats()
    assert stats["thread_busy_rejections"] == 0


def test_job_timeout_expires_and_cancels_the_run(make_askq: Callable[..., Askq]) -> None:
    deployment = make_askq(job_timeout_s=2.0, sweep_interval_s=0.3)
    deployment.start_worker()
    job_id = deployment.client.ask("[never] a run that never ends")
    result = deployment.client.wait(job_id, timeout=30)
    assert result.status is JobStatus.EXPIRED  # type: ignore[union-attr]
    assert result.error is not None and result.error.code == "job_timeout"  # type: ignore[union-attr]
    assert list(deployment.emulator.stats()["cancel_requests"].values()) == [1]


def test_lost_responses_never_create_a_second_run(make_askq: Callable[..., Askq]) -> None:
    """The API creates the run but the answer never arrives (a crash between the POST and
    the write that records it): a retried start must not create another."""
    deployment = make_askq(http_timeout_s=2.0, lease_margin_s=1.0)
    style = deployment.settings.api_style
    create = deployment.routes.create
    deployment.emulator.configure(lost_response=0.4, seed=11, fault_paths=[create])
    deployment.start_worker()
    batch_id = deployment.client.submit_batch([f"What is {i} * 2?" for i in range(40)])
    final = deployment.client.wait(batch_id, timeout=120)
    stats = deployment.emulator.stats()
    assert stats["faults"].get("lost_response", 0) > 5, stats["faults"]
    assert set(stats["runs_by_job"].values()) == {1}
    counts = final.counts  # type: ignore[union-attr]
    if style == "assistants":
        # the retried start lists the thread's runs and adopts its own
        assert counts == {JobStatus.COMPLETED: 40}
    elif style == "agents":
        # the retried creation repeats its Idempotency-Key: the server answers with the
        # session it made the first time instead of making another
        assert counts == {JobStatus.COMPLETED: 40}
        assert stats["idempotent_replays"] >= stats["faults"]["lost_response"]
    else:
        # Responses can't be listed: the ambiguous ones fail rather than run twice
        ambiguous = [
            r
            for r in deployment.client.results(batch_id)
            if r.error and r.error.code == "ambiguous_start"
        ]
        assert counts.get(JobStatus.COMPLETED, 0) + len(ambiguous) == 40
        assert ambiguous
