"""Tools (`requires_action`, `askq.act`) and cancels (`askq.cancel`) end to end."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from tests.conftest import ASSISTANTS_ONLY, BOTH_CLIENTS, Askq, wait_until
from worker.celery_app import create_app
from worker.models import JobRequest, JobResult
from worker.states import JobStatus

TOOLS = "tests.sample_tools"


def tool_tag(name: str, **arguments: object) -> str:
    return f"[tool:{name} {json.dumps(arguments)}]"


@pytest.fixture
def tooled(make_askq: Callable[..., Askq]) -> Askq:
    deployment = make_askq(tool_modules=TOOLS, tool_timeout_s=1.0)
    deployment.start_worker()
    return deployment


def finished(deployment: Askq, job_id: str, timeout: float = 30) -> JobResult:
    result = deployment.client.wait(job_id, timeout=timeout)
    assert isinstance(result, JobResult)
    return result


def test_tool_output_reaches_the_answer(tooled: Askq) -> None:
    result = finished(tooled, tooled.client.ask(f"Add these {tool_tag('add', a=2, b=3)}"))
    assert result.status is JobStatus.COMPLETED, result.error
    assert result.answer is not None and "add returned: 5" in result.answer
    (call,) = result.tool_calls
    assert (call.name, json.loads(call.arguments), call.output, call.error) == (
        "add",
        {"a": 2, "b": 3},
        "5",
        None,
    )


def test_parallel_tool_calls_are_submitted_together(tooled: Askq) -> None:
    question = f"Two things {tool_tag('add', a=1, b=2)} {tool_tag('lookup', city='Oslo')}"
    result = finished(tooled, tooled.client.ask(question))
    assert result.status is JobStatus.COMPLETED, result.error
    assert result.answer is not None
    assert "add returned: 3" in result.answer and "lookup returned: sunny in Oslo" in result.answer
    assert sorted(c.name for c in result.tool_calls) == ["add", "lookup"]
    submissions = tooled.emulator.stats()["tool_output_submissions"]
    assert list(submissions.values()) == [1]


@pytest.mark.parametrize(
    ("tag", "error_part"),
    [
        (tool_tag("boom"), "RuntimeError: the tool broke"),
        (tool_tag("slow", seconds=5), "timed out"),
        (tool_tag("nosuch"), "unknown tool"),
        (tool_tag("add", a="x", b=1), "invalid arguments"),
    ],
    ids=["raises", "timeout", "unknown", "bad-arguments"],
)
def test_tool_failures_become_outputs_not_failed_jobs(
    tooled: Askq, tag: str, error_part: str
) -> None:
    result = finished(tooled, tooled.client.ask(f"Try {tag}"))
    assert result.status is JobStatus.COMPLETED, result.error
    (call,) = result.tool_calls
    assert call.error is not None and error_part in call.error, call.error
    assert json.loads(call.output)["error"]
    assert result.answer is not None and "returned:" in result.answer


def test_job_restricted_to_some_tools(tooled: Askq) -> None:
    request = JobRequest(question=f"Add {tool_tag('add', a=1, b=1)}", tools=["lookup"])
    result = finished(tooled, tooled.client.ask(request))
    (call,) = result.tool_calls
    assert call.error is not None and "not allowed" in call.error


@ASSISTANTS_ONLY
def test_run_expiring_in_requires_action_ends_expired(make_askq: Callable[..., Askq]) -> None:
    """Assistants only: a run waiting for tool outputs expires at `expires_at`. A Responses
    function call is a finished response (the outputs start a new one), and an Agents turn
    waiting for function results has no expiry in the API (the SDK's `Turn` has no
    `expires_at` nor an `expired` status): neither can expire while askq runs the tools."""
    deployment = make_askq(tool_modules=TOOLS, tool_timeout_s=5.0)
    deployment.emulator.configure(requires_action_timeout_s=0.5)
    deployment.start_worker()
    result = finished(deployment, deployment.client.ask(f"Wait {tool_tag('slow', seconds=1.5)}"))
    assert result.status is JobStatus.EXPIRED
    assert result.tool_calls[0].output == "slept 1.5"


@BOTH_CLIENTS
def test_cancel_pending_job_makes_no_remote_call(make_askq: Callable[..., Askq]) -> None:
    deployment = make_askq(max_inflight=1)
    deployment.start_worker()
    blocker = deployment.client.ask("[never] hold the only slot")
    wait_until(
        lambda: deployment.client.status(blocker).status is JobStatus.RUNNING,
        what="the blocker to run",
    )
    waiting = deployment.client.ask("What is 1 + 1?")
    assert deployment.client.status(waiting).status is JobStatus.PENDING
    assert deployment.client.cancel(waiting).requested == 1
    assert finished(deployment, waiting).status is JobStatus.CANCELLED
    deployment.client.cancel(blocker)
    assert finished(deployment, blocker).status is JobStatus.CANCELLED
    stats = deployment.emulator.stats()
    assert waiting not in stats["runs_by_job"]
    assert list(stats["cancel_requests"].values()) == [1]
    assert deployment.client.store.redis.zcard(deployment.client.store.keys.inflight) == 0


@BOTH_CLIENTS
def test_cancel_running_job_and_duplicate_cancels(askq: Askq) -> None:
    job_id = askq.client.ask("[never] keep going")
    wait_until(lambda: askq.client.status(job_id).status is JobStatus.RUNNING, what="running")
    askq.client.cancel(job_id)
    app = create_app(askq.settings)
    for _ in range(3):  # duplicates of the cancel message, on purpose
        app.send_task("askq.cancel", args=[job_id], queue="askq.cancel")
    assert finished(askq, job_id).status is JobStatus.CANCELLED
    run_id = askq.client.status(job_id).run_id  # type: ignore[union-attr]
    assert askq.emulator.stats()["cancel_requests"] == {run_id: 1}


def test_cancel_while_tools_run(make_askq: Callable[..., Askq]) -> None:
    deployment = make_askq(tool_modules=TOOLS, tool_timeout_s=10.0)
    deployment.start_worker()
    job_id = deployment.client.ask(f"Slowly {tool_tag('slow', seconds=2)}")
    wait_until(
        lambda: deployment.client.status(job_id).status is JobStatus.REQUIRES_ACTION,
        what="requires_action",
    )
    deployment.client.cancel(job_id)
    assert finished(deployment, job_id).status is JobStatus.CANCELLED
    assert deployment.emulator.stats()["tool_output_submissions"] == {}


def test_cancel_finished_job_changes_nothing(askq: Askq) -> None:
    job_id = askq.client.ask("What is 2 + 2?")
    assert finished(askq, job_id).status is JobStatus.COMPLETED
    done = askq.cli("cancel", job_id)
    assert done.returncode == 0 and "already finished" in done.stderr
    assert askq.client.status(job_id).status is JobStatus.COMPLETED  # type: ignore[union-attr]
    assert askq.emulator.stats()["cancel_requests"] == {}


@pytest.mark.slow
@BOTH_CLIENTS
def test_cancel_batch_of_500_in_flight(make_askq: Callable[..., Askq]) -> None:
    deployment = make_askq(poll_min_s=0.5, poll_max_s=2.0)
    deployment.start_worker(concurrency=16)
    batch_id = deployment.client.submit_batch([f"[never] job {i}" for i in range(500)])
    wait_until(
        lambda: deployment.client.status(batch_id).counts.get(JobStatus.RUNNING, 0) >= 200,  # type: ignore[union-attr]
        timeout=60,
        what="runs in flight",
    )
    outcome = deployment.client.cancel(batch_id)
    assert outcome.requested == 500
    final = deployment.client.wait(batch_id, timeout=90)
    assert final.counts == {JobStatus.CANCELLED: 500}  # type: ignore[union-attr]
    stats = deployment.emulator.stats()
    assert set(stats["cancel_requests"].values()) == {1}
    assert len(stats["cancel_requests"]) == len(stats["runs_by_job"])
    assert deployment.client.store.redis.zcard(deployment.client.store.keys.inflight) == 0


def test_every_message_delivered_twice_changes_nothing(make_askq: Callable[..., Askq]) -> None:
    deployment = make_askq(tool_modules=f"{TOOLS},tests.duplicate_publish")
    deployment.start_worker()
    questions = [f"What is {i} + {i}?" for i in range(20)]
    questions += [f"Add {tool_tag('add', a=i, b=1)}" for i in range(10)]
    batch_id = deployment.client.submit_batch(questions)
    final = deployment.client.wait(batch_id, timeout=60)
    assert final.completed == 30  # type: ignore[union-attr]
    results = list(deployment.client.results(batch_id))
    stats = deployment.emulator.stats()
    # Responses answer tool calls in a second response of the same job: one more, never two
    per_tool_job = 2 if deployment.settings.api_style == "responses" else 1
    expected = {r.job_id: per_tool_job if r.tool_calls else 1 for r in results}
    assert stats["runs_by_job"] == expected
    assert set(stats["tool_output_submissions"].values()) == {1}
    assert len(stats["tool_output_submissions"]) == 10
    log = deployment.workers[0].output()
    assert log.count("askq.poll[") > 2 * 30  # duplicates really were delivered


def test_a_job_naming_a_tool_the_workers_lack_fails_before_any_run(tooled: Askq) -> None:
    """A typo in `--tools` must not run the job silently without the tool it was meant for."""
    request = JobRequest(question="Add 1 and 1", tools=["add", "ad"])
    result = finished(tooled, tooled.client.ask(request))
    assert result.status is JobStatus.FAILED
    assert result.error is not None and result.error.code == "unknown_tools"
    assert "ad" in result.error.message and "ASKQ_TOOL_MODULES" in result.error.message
    assert tooled.emulator.stats()["runs_by_job"] == {}
