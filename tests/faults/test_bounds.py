"""Bounds on what the API sends back: huge answers and endless pages end the job with a clear
error code, and the worker's memory stays flat."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import ASSISTANTS_ONLY, Askq
from worker.states import JobStatus

pytestmark = pytest.mark.slow


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def errors(deployment: Askq, job_ids: list[str]) -> list[str | None]:
    codes = []
    for job_id in job_ids:
        result = deployment.client.wait(job_id, timeout=120)
        assert result.status is JobStatus.FAILED, result  # type: ignore[union-attr]
        codes.append(result.error.code if result.error else None)  # type: ignore[union-attr]
    return codes


def test_huge_answers_are_refused_and_memory_stays_flat(make_askq: Callable[..., Askq]) -> None:
    deployment = make_askq()
    worker = deployment.start_worker(concurrency=4)
    warm = deployment.client.wait(deployment.client.ask("What is 1 + 1?"), timeout=60)
    assert warm.status is JobStatus.COMPLETED  # type: ignore[union-attr]
    before = rss_mb(worker.process.pid)
    jobs = [deployment.client.ask(f"[answer_mb=50] Long answer {i}") for i in range(4)]
    assert errors(deployment, jobs) == ["response_too_large"] * 4
    after = rss_mb(worker.process.pid)
    print(f"\nworker RSS with four 50 MB answers: {before:.0f} MB before, {after:.0f} MB after")
    assert after - before < 64  # the cap is 8 MiB a response: never the 200 MB of answers
    store = deployment.client.store
    for job_id in jobs:
        assert store.redis.memory_usage(store.keys.job(job_id)) < 64 * 1024


@ASSISTANTS_ONLY
def test_endless_pages_end(make_askq: Callable[..., Askq]) -> None:
    deployment = make_askq(max_answer_pages=5)
    deployment.start_worker()
    job_id = deployment.client.ask("[endless_pages] What is 2 + 2?")
    assert errors(deployment, [job_id]) == ["too_many_answer_pages"]
    pages = deployment.emulator.stats()["requests"]["GET /v1/threads/{thread_id}/messages"]
    assert pages == 5


def test_answer_size_tool_calls_and_their_arguments_are_bounded(
    make_askq: Callable[..., Askq],
) -> None:
    deployment = make_askq(
        max_answer_chars=100_000,
        max_tool_calls=2,
        max_tool_argument_bytes=200,
        tool_modules="tests.sample_tools",
    )
    deployment.start_worker()
    tag = "[tool:lookup " + json.dumps({"city": "Oslo"}) + "]"
    big = "[tool:lookup " + json.dumps({"city": "x" * 300}) + "]"
    jobs = [
        deployment.client.ask("[answer_mb=1] A long answer"),
        deployment.client.ask(f"Three calls {tag} {tag} {tag}"),
        deployment.client.ask(f"Huge arguments {big}"),
    ]
    assert errors(deployment, jobs) == [
        "answer_too_large",
        "too_many_tool_calls",
        "tool_arguments_too_large",
    ]
    # a run left waiting for tool outputs askq will not send is cancelled, not left to expire
    assert len(deployment.emulator.stats()["cancel_requests"]) == 2
