"""Fault injection, stats counters and the control routes."""

from __future__ import annotations

import httpx
import pytest
from emu_helpers import BETA, get_run, question_run, wait_status, wait_until

from emulator import EmulatorConfig, EmulatorControl, RunningEmulator
from emulator.state import EmulatorState


def test_poll_after_header_on_runs(api: httpx.Client, control: EmulatorControl) -> None:
    run = question_run(api, "hi")
    url = f"/threads/{run['thread_id']}/runs/{run['id']}"
    assert "openai-poll-after-ms" not in api.get(url).headers
    control.configure(poll_after_ms=120)
    assert api.get(url).headers["openai-poll-after-ms"] == "120"


def test_stats_counts(api: httpx.Client, control: EmulatorControl) -> None:
    first = question_run(api, "a", metadata={"askq_job": "job-a"})
    question_run(api, "b", metadata={"askq_job": "job-a"})
    question_run(api, "c", metadata={"askq_job": "job-b"})
    question_run(api, "no job")
    for _ in range(3):
        get_run(api, first)
    api.get("/threads/thread_missing")
    stats = control.stats()
    assert stats["runs_by_job"] == {"job-a": 2, "job-b": 1}
    assert stats["gets_by_run"] == {first["id"]: 3}
    assert stats["requests"]["POST /v1/threads/runs"] == 4
    assert stats["requests"]["GET /v1/threads/{thread_id}/runs/{run_id}"] == 3
    assert stats["requests"]["GET /v1/threads/{thread_id}"] == 1
    assert stats["status_codes"] == {"200": 7, "404": 1}
    assert len(stats["request_times"]) == 8
    assert stats["request_times"] == sorted(stats["request_times"])
    control.reset()
    assert control.stats()["requests"] == {}


def test_max_active_runs_is_exact(api: httpx.Client, control: EmulatorControl) -> None:
    control.configure(run_time_s=0.4)
    runs = [question_run(api, f"q{i}") for i in range(5)]
    assert control.stats()["active_runs"] == 5
    for run in runs:
        wait_status(api, run, {"completed"})
    # Nobody reads the runs any more, yet the count drops when their end time passes.
    control.configure(run_time_s=0.05)
    wait_until(lambda: control.stats()["active_runs"] == 0)
    late = question_run(api, "later")
    stats = control.stats()
    assert stats["max_active_runs"] == 5 and stats["active_runs"] == 1
    wait_status(api, late, {"completed"})


def test_active_count_follows_lazy_ends_without_reads(
    api: httpx.Client, control: EmulatorControl
) -> None:
    control.configure(run_time_s=0.1)
    question_run(api, "x")
    question_run(api, "[never]")
    wait_until(lambda: control.stats()["active_runs"] == 1)
    assert control.stats()["max_active_runs"] == 2


def test_patch_config_validates(control: EmulatorControl, emulator: RunningEmulator) -> None:
    assert control.configure(fail_429=0.5)["fail_429"] == 0.5
    reply = httpx.patch(f"{emulator.base}/_emulator/config", json={"fail_429": 2})
    assert reply.status_code == 400
    reply = httpx.patch(f"{emulator.base}/_emulator/config", json={"no_such": 1})
    assert reply.status_code == 400
    control.configure(upstream_api_key="sk-secret")
    assert control.config()["upstream_api_key"] == "***"


def test_faults_never_touch_control_routes(control: EmulatorControl) -> None:
    control.configure(fail_500=1.0, drop=0.0)
    for _ in range(5):
        control.stats()  # would raise on a 500


def test_fault_fractions_with_seed(emulator: RunningEmulator, control: EmulatorControl) -> None:
    def outcomes() -> list[int]:
        control.configure(fail_429=0.3, fail_500=0.2, seed=1234)
        with httpx.Client(base_url=emulator.url, headers=BETA) as client:
            return [client.get("/threads/thread_none").status_code for _ in range(400)]

    first = outcomes()
    assert first == outcomes()  # same seed, same sequence
    rate_429 = first.count(429) / len(first)
    rate_500 = first.count(500) / len(first)
    assert 0.22 < rate_429 < 0.38 and 0.13 < rate_500 < 0.27
    assert first.count(404) == len(first) - first.count(429) - first.count(500)
    stats = control.stats()
    assert stats["faults"]["429"] == 2 * first.count(429)
    assert stats["status_codes"]["429"] == 2 * first.count(429)


def test_429_shape_and_retry_after(emulator: RunningEmulator, control: EmulatorControl) -> None:
    control.configure(fail_429=1.0, retry_after_s=2.5)
    reply = httpx.post(f"{emulator.url}/responses", json={"model": "m", "input": "x"})
    assert reply.status_code == 429
    assert reply.headers["retry-after"] == "2.5" and reply.headers["retry-after-ms"] == "2500"
    assert reply.json()["error"]["code"] == "rate_limit_exceeded"
    assert control.stats()["responses_created"] == 0  # a 429 does no work


def test_fault_paths_limit_faults(api: httpx.Client, control: EmulatorControl) -> None:
    control.configure(fail_500=1.0, fault_paths=["GET /v1/threads/{thread_id}/runs/{run_id}"])
    run = question_run(api, "hi")  # POST is not faulted
    assert api.get(f"/threads/{run['thread_id']}/runs/{run['id']}").status_code == 500
    control.configure(fault_paths=["POST"])
    assert api.get(f"/threads/{run['thread_id']}/runs/{run['id']}").status_code == 200


def test_drop_closes_without_answer(api: httpx.Client, control: EmulatorControl) -> None:
    control.configure(drop=1.0)
    with pytest.raises(httpx.RemoteProtocolError):
        api.post(
            "/threads/runs",
            json={"assistant_id": "a", "metadata": {"askq_job": "dropped"}},
        )
    control.configure(drop=0.0)
    stats = control.stats()
    assert stats["faults"]["drop"] == 1
    assert stats["runs_created"] == 0 and stats["runs_by_job"] == {}  # nothing was done


def test_lost_response_does_the_work(api: httpx.Client, control: EmulatorControl) -> None:
    control.configure(lost_response=1.0)
    with pytest.raises(httpx.RemoteProtocolError):
        api.post(
            "/threads/runs",
            json={
                "assistant_id": "a",
                "metadata": {"askq_job": "lost"},
                "thread": {"messages": [{"role": "user", "content": "What is 2 + 5?"}]},
            },
        )
    control.configure(lost_response=0.0)
    stats = control.stats()
    assert stats["faults"]["lost_response"] == 1
    assert stats["runs_by_job"] == {"lost": 1}
    assert stats["runs_created"] == 1


def test_slow_delays_requests(api: httpx.Client, control: EmulatorControl) -> None:
    control.configure(slow=1.0, slow_s=0.3)
    reply = api.get("/threads/thread_x")
    assert reply.status_code == 404
    assert reply.elapsed.total_seconds() >= 0.3
    assert control.stats()["faults"]["slow"] == 1


def test_a_new_seed_restarts_the_webhook_fault_sequence_too() -> None:
    """Tests that configure `seed` with webhook faults expect the same drops and duplicates
    every run, whatever deliveries an earlier test on the same emulator drew."""
    state = EmulatorState(EmulatorConfig(seed=1))
    state.webhooks.rng.random()  # an earlier test's deliveries

    def draws() -> list[float]:
        state.configure({"seed": 7, "webhook_drop": 0.3})
        return [state.webhooks.rng.random() for _ in range(6)]

    assert draws() == draws()
