"""What a finished job keeps: an incomplete run's text, and a usage for every terminal status."""

from __future__ import annotations

import pytest

from tests.unit.test_machine import NOW, POLICY, job, rng, running, snap
from worker import machine
from worker.errors import FinalApiError
from worker.machine import Task
from worker.models import ErrorInfo, Usage
from worker.states import JobStatus

USAGE = Usage(prompt_tokens=5, completion_tokens=7, total_tokens=12)


def test_incomplete_run_keeps_its_text_as_partial_answer_not_answer() -> None:
    error = ErrorInfo(code="incomplete", message="the run ended early: max_completion_tokens")
    step = machine.on_snapshot(
        running(), snap("incomplete", answer="half a", usage=USAGE, error=error), NOW, POLICY, rng()
    )
    assert step.record.status is JobStatus.INCOMPLETE
    result = step.record.result()
    assert result.answer is None  # the contract: null unless completed
    assert result.partial_answer == "half a"
    assert result.usage == USAGE and result.error == error


def test_completed_result_has_no_partial_answer() -> None:
    step = machine.on_snapshot(
        running(), snap("completed", answer="2", usage=USAGE), NOW, POLICY, rng()
    )
    result = step.record.result()
    assert (result.answer, result.partial_answer) == ("2", None)


@pytest.mark.parametrize("status", ["failed", "cancelled", "expired", "incomplete", "completed"])
def test_every_terminal_status_has_a_usage_even_when_the_api_sent_none(status: str) -> None:
    step = machine.on_snapshot(running(), snap(status), NOW, POLICY, rng())
    assert step.terminal
    assert step.record.result().usage == Usage()


def test_a_job_failed_before_any_run_has_zero_usage() -> None:
    failure = FinalApiError("no assistant", code="no_assistant")
    step = machine.on_api_error(job(), failure, Task.START, NOW, POLICY, rng(), 3)
    assert step.record.status is JobStatus.FAILED
    assert step.record.result().usage == Usage()


def test_a_failed_tool_chain_keeps_what_earlier_responses_used() -> None:
    chained = running().model_copy(update={"settled_usage": USAGE})
    step = machine.on_api_error(
        chained, FinalApiError("bad", code="bad"), Task.ACT, NOW, POLICY, rng(), 3
    )
    assert step.record.result().usage == USAGE


def test_cancelled_job_without_a_run_has_zero_usage() -> None:
    step = machine.on_cancel_requested(job(), NOW)
    assert step is not None and step.record.status is JobStatus.CANCELLED
    assert step.record.result().usage == Usage()
