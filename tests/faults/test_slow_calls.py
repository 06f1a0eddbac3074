"""A slow call never leaves two runs: servers that trickle their answer, stall after the
headers, or stall before doing the work, on run creation and on tool-output submission.

Settings make the calls outlive their lease (lease 5 s, request deadline 8 s, answers held 12 s):
the worker's heartbeat keeps the lease of a call that is still going, the request deadline
abandons it, and the retry looks for the run before creating one.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from tests.conftest import Askq
from worker.states import JobStatus

pytestmark = pytest.mark.slow

SLOW = {
    "trickle": {"trickle": 0.5, "trickle_s": 12.0, "trickle_byte_s": 0.5},
    "stall_after_headers": {"stall_after_headers": 0.5, "stall_after_headers_s": 12.0},
    "stall_before_work": {"slow": 0.5, "slow_s": 12.0},
}


def deploy(make_askq: Callable[..., Askq], **overrides: object) -> Askq:
    return make_askq(http_timeout_s=2.0, lease_margin_s=1.0, request_deadline_s=8.0, **overrides)


def runs_per_job(deployment: Askq) -> list[int]:
    return sorted(deployment.emulator.stats()["runs_by_job"].values())


@pytest.mark.parametrize("kind", list(SLOW))
def test_slow_run_creation_never_leaves_two_runs(make_askq: Callable[..., Askq], kind: str) -> None:
    deployment = deploy(make_askq)
    deployment.emulator.configure(
        run_time_s=1.0, seed=3, fault_paths=[deployment.routes.create], **SLOW[kind]
    )
    deployment.start_worker(concurrency=8)
    batch_id = deployment.client.submit_batch([f"What is {i} * 7?" for i in range(8)])
    final = deployment.client.wait(batch_id, timeout=150)
    stats = deployment.emulator.stats()
    slowed = stats["faults"].get(kind if kind != "stall_before_work" else "slow", 0)
    assert slowed >= 2, stats["faults"]
    runs = runs_per_job(deployment)
    print(f"\n{deployment.settings.api_style}, {kind}: runs per job {runs}")
    assert set(runs) <= {1} and len(runs) <= 8
    results = list(deployment.client.results(batch_id))
    counts = final.counts  # type: ignore[union-attr]
    if deployment.settings.api_style != "responses":
        assert counts == {JobStatus.COMPLETED: 8}, [r.error for r in results]
        assert len(runs) == 8
    else:
        # no list of responses: a start that cannot tell fails rather than run twice
        for result in results:
            assert result.status is JobStatus.COMPLETED or (
                result.error is not None and result.error.code == "ambiguous_start"
            ), result
    for result in results:
        if result.status is JobStatus.COMPLETED:
            assert result.answer is not None and " * 7 = " in result.answer


@pytest.mark.parametrize("style", ["assistants", "agents"], indirect=True)
@pytest.mark.parametrize("kind", ["trickle", "stall_after_headers"])
def test_slow_tool_output_submission_is_not_repeated(
    make_askq: Callable[..., Askq], kind: str
) -> None:
    deployment = deploy(make_askq, tool_modules="tests.sample_tools", tool_timeout_s=1.0)
    deployment.emulator.configure(
        run_time_s=0.5, seed=5, fault_paths=[deployment.routes.submit], **SLOW[kind]
    )
    deployment.start_worker(concurrency=8)
    tag = "[tool:add " + json.dumps({"a": 2, "b": 3}) + "]"
    batch_id = deployment.client.submit_batch([f"Job {i} adds {tag}" for i in range(6)])
    final = deployment.client.wait(batch_id, timeout=150)
    assert final.counts == {JobStatus.COMPLETED: 6}  # type: ignore[union-attr]
    stats = deployment.emulator.stats()
    assert stats["faults"].get(kind, 0) >= 2, stats["faults"]
    assert set(runs_per_job(deployment)) == {1}
    for result in deployment.client.results(batch_id):
        assert result.answer == "add returned: 5"
        assert len(result.tool_calls) == 1  # the tools ran once, whatever the retries
