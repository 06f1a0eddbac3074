"""ASKQ_RESPONSES_CONVERSATIONS against Responses servers with and without /v1/conversations.

Responses only: conversations are a Responses API object (Assistants have threads, Agents
sessions; neither has a mode to choose)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.conftest import Askq
from worker.keys import Keys
from worker.states import JobStatus

RESPONSES_ONLY = pytest.mark.parametrize("style", ["responses"], indirect=True)
ADD = '[tool:add {"a": 2, "b": 3}]'
CONVERSATIONS = "POST /v1/conversations"


def run_batch(deployment: Askq, questions: list[str]) -> list[object]:
    deployment.start_worker(concurrency=4)
    batch_id = deployment.client.submit_batch(questions)
    final = deployment.client.wait(batch_id, timeout=60)
    assert final.completed == len(questions), final  # type: ignore[union-attr]
    return list(deployment.client.results(batch_id))


@RESPONSES_ONLY
def test_auto_learns_the_server_has_no_conversations_and_chains_responses(
    make_askq: Callable[..., Askq],
) -> None:
    deployment = make_askq(tool_modules="tests.sample_tools")
    deployment.emulator.configure(conversations=False)
    questions = [f"What is {i} + 6?" for i in range(12)] + [f"Add {ADD}"]
    results = run_batch(deployment, questions)
    assert [r.answer for r in results[:12]] == [f"{i} + 6 = {i + 6}" for i in range(12)]  # type: ignore[attr-defined]
    assert "add returned: 5" in (results[12].answer or "")  # type: ignore[attr-defined]
    assert all(r.thread_id is None for r in results)  # type: ignore[attr-defined]
    stats = deployment.emulator.stats()
    # the first 404 is remembered: at most one try per worker thread starting at that moment
    assert 1 <= stats["requests"][CONVERSATIONS] <= 4
    assert stats["status_codes"]["404"] == stats["requests"][CONVERSATIONS]
    remembered = Keys(deployment.settings.key_prefix).no_conversations
    assert deployment.client.store.redis.ttl(remembered) > 3600


@RESPONSES_ONLY
def test_auto_uses_conversations_where_the_server_has_them(
    make_askq: Callable[..., Askq],
) -> None:
    results = run_batch(make_askq(), [f"What is {i} + 7?" for i in range(5)])
    assert all(str(r.thread_id).startswith("conv_") for r in results)  # type: ignore[attr-defined]


@RESPONSES_ONLY
def test_off_never_asks_and_an_ambiguous_start_fails_rather_than_runs_twice(
    make_askq: Callable[..., Askq],
) -> None:
    deployment = make_askq(responses_conversations="off", http_timeout_s=2.0, lease_margin_s=1.0)
    deployment.emulator.configure(lost_response=0.4, seed=5, fault_paths=["POST /v1/responses"])
    deployment.start_worker()
    batch_id = deployment.client.submit_batch([f"What is {i} * 4?" for i in range(20)])
    final = deployment.client.wait(batch_id, timeout=90)
    stats = deployment.emulator.stats()
    assert CONVERSATIONS not in stats["requests"]
    assert set(stats["runs_by_job"].values()) == {1}
    ambiguous = [
        r
        for r in deployment.client.results(batch_id)
        if r.error and r.error.code == "ambiguous_start"
    ]
    assert ambiguous and final.completed + len(ambiguous) == 20  # type: ignore[union-attr]


@RESPONSES_ONLY
def test_on_fails_jobs_with_the_servers_404(make_askq: Callable[..., Askq]) -> None:
    deployment = make_askq(responses_conversations="on")
    deployment.emulator.configure(conversations=False)
    deployment.start_worker()
    result = deployment.client.wait(deployment.client.ask("What is 1 + 1?"), timeout=30)
    assert result.status is JobStatus.FAILED  # type: ignore[union-attr]
    assert result.error is not None and "conversations" in result.error.message  # type: ignore[union-attr]
