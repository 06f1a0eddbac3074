"""Agents API sessions, driven by the official SDK (`client.beta.agents`) and raw HTTP."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from emu_helpers import wait_until
from openai import BadRequestError, NotFoundError, OpenAI
from openai.types.beta.agent_session import AgentSession
from openai.types.beta.agents.sessions.turn import Turn

from emulator import EmulatorControl, RunningEmulator

NONE = {"type": "none"}
ADD = {
    "type": "function",
    "name": "add",
    "description": "Add two integers.",
    "parameters": {"type": "object", "properties": {"a": {"type": "integer"}}},
}


@pytest.fixture
def raw(emulator: RunningEmulator, control: EmulatorControl) -> httpx.Client:
    return httpx.Client(base_url=emulator.url, headers={"OpenAI-Beta": "agents=v1"}, timeout=10)


def turn_of(sdk: OpenAI, session: AgentSession) -> Turn:
    (turn,) = sdk.beta.agents.sessions.turns.list(session.id).data
    return turn


def until_ended(sdk: OpenAI, session_id: str, turn_id: str) -> Turn:
    def ended() -> Turn | None:
        turn = sdk.beta.agents.sessions.turns.retrieve(turn_id, session_id=session_id)
        return turn if turn.status in ("completed", "failed", "cancelled") else None

    return wait_until(ended)


def until_status(sdk: OpenAI, session_id: str, status: str) -> AgentSession:
    def reached() -> AgentSession | None:
        session = sdk.beta.agents.sessions.retrieve(session_id)
        return session if session.status == status else None

    return wait_until(reached)


def answer(sdk: OpenAI, session_id: str, turn_id: str) -> str:
    items = sdk.beta.agents.sessions.turns.items.list(turn_id, session_id=session_id, order="asc")
    return "".join(
        item.output_text
        for item in items
        if item.type == "message" and item.role == "assistant"  # type: ignore[union-attr]
    )


def test_sdk_session_runs_a_turn_to_its_answer(sdk: OpenAI, control: EmulatorControl) -> None:
    session = sdk.beta.agents.sessions.create(
        environment=NONE,
        agent={"model": "gpt-test", "instructions": "Be brief."},
        input="What is 12 * 12? [run_time=0.5]",
        metadata={"askq_job": "job-a"},
    )
    assert session.object == "agent.session" and session.status == "in_progress"
    assert session.environment.type == "none" and session.agent.model == "gpt-test"
    assert session.metadata == {"askq_job": "job-a"} and session.required_actions == []
    turn = turn_of(sdk, session)
    assert turn.object == "agent.session.turn" and turn.session_id == session.id
    assert turn.status in ("queued", "in_progress") and turn.usage is None
    done = until_ended(sdk, session.id, turn.id)
    assert done.status == "completed" and done.error is None and done.completed_at is not None
    assert done.usage is not None and done.usage.total_tokens > 0
    assert answer(sdk, session.id, turn.id) == "12 * 12 = 144"
    idle = sdk.beta.agents.sessions.retrieve(session.id)
    assert idle.status == "idle" and idle.usage is not None
    stats = control.stats()
    assert stats["runs_by_job"] == {"job-a": 1} and stats["gets_by_run"][turn.id] >= 1


def test_sdk_turn_items_hold_the_user_message_and_the_answer(sdk: OpenAI) -> None:
    session = sdk.beta.agents.sessions.create(
        environment=NONE,
        agent_id="agent_any",
        input=[{"role": "user", "content": [{"type": "input_text", "text": "[multi] hi"}]}],
    )
    turn = until_ended(sdk, session.id, turn_of(sdk, session).id)
    items = list(sdk.beta.agents.sessions.turns.items.list(turn.id, session_id=session.id))
    roles = [(i.type, i.role, i.phase) for i in items]  # type: ignore[union-attr]
    assert roles == [
        ("message", "assistant", "final_answer"),
        ("message", "assistant", "final_answer"),
        ("message", "user", None),
    ]  # newest first, as the SDK's default order says
    assert turn.agent_id == "agent_any"
    everything = list(sdk.beta.agents.sessions.items.list(session.id, order="asc"))
    assert [i.role for i in everything] == ["user", "assistant", "assistant"]  # type: ignore[union-attr]


def test_sdk_function_calls_and_tool_results(sdk: OpenAI, control: EmulatorControl) -> None:
    session = sdk.beta.agents.sessions.create(
        environment=NONE,
        agent={"model": "m", "tools": [ADD]},
        input='Sum [tool:add {"a": 2, "b": 3}] [tool:add {"a": 1, "b": 1}]',
    )
    waiting = until_status(sdk, session.id, "requires_action")
    actions = waiting.required_actions
    assert [a.type for a in actions] == ["function_call", "function_call"]
    assert actions[0].arguments == {"a": 2, "b": 3}  # type: ignore[union-attr]
    turn_id = actions[0].turn_id  # type: ignore[union-attr]
    turn = sdk.beta.agents.sessions.turns.retrieve(turn_id, session_id=session.id)
    assert turn.status == "waiting"
    results: list[Any] = [
        {
            "type": "agent.session.input.tool_result",
            "turn_id": turn_id,
            "call_id": actions[0].call_id,  # type: ignore[union-attr]
            "success": True,
            "output": "5",
        },
        {
            "type": "agent.session.input.tool_result",
            "turn_id": turn_id,
            "call_id": actions[1].call_id,  # type: ignore[union-attr]
            "success": False,
            "error": "Tool handler failed.",
        },
    ]
    sdk.beta.agents.sessions.events.create(session.id, events=results, idempotency_key="tr-1")
    # the same key again (a retried request) does nothing a second time
    sdk.beta.agents.sessions.events.create(session.id, events=results, idempotency_key="tr-1")
    done = until_ended(sdk, session.id, turn_id)
    assert done.status == "completed"
    assert answer(sdk, session.id, turn_id) == (
        "add returned: 5\nadd returned: Tool handler failed."
    )
    stats = control.stats()
    assert stats["tool_output_submissions"] == {turn_id: 1}
    assert stats["idempotent_replays"] == 1
    with pytest.raises(BadRequestError, match="Unknown pending tool call"):
        sdk.beta.agents.sessions.events.create(session.id, events=results)


def test_sdk_message_event_continues_the_session_in_order(sdk: OpenAI) -> None:
    session = sdk.beta.agents.sessions.create(
        environment=NONE, agent={"model": "m"}, input="What is 1 + 1?"
    )
    first = until_ended(sdk, session.id, turn_of(sdk, session).id)
    message: Any = {
        "type": "agent.session.input.message",
        "input": [{"role": "user", "content": [{"type": "input_text", "text": "What is 2 + 40?"}]}],
    }
    sdk.beta.agents.sessions.events.create(session.id, events=[message], idempotency_key="m-1")
    turns = sdk.beta.agents.sessions.turns.list(session.id).data
    assert [t.id for t in turns][1] == first.id  # newest first
    second = until_ended(sdk, session.id, turns[0].id)
    assert answer(sdk, session.id, second.id) == "2 + 40 = 42"
    # a retried request with the same key starts no third turn
    sdk.beta.agents.sessions.events.create(session.id, events=[message], idempotency_key="m-1")
    assert len(sdk.beta.agents.sessions.turns.list(session.id).data) == 2


def test_message_while_a_turn_runs_is_refused(sdk: OpenAI, control: EmulatorControl) -> None:
    session = sdk.beta.agents.sessions.create(
        environment=NONE, agent={"model": "m"}, input="[never] go on"
    )
    message: Any = {
        "type": "agent.session.input.message",
        "input": [{"role": "user", "content": [{"type": "input_text", "text": "more"}]}],
    }
    with pytest.raises(BadRequestError) as refused:
        sdk.beta.agents.sessions.events.create(session.id, events=[message], idempotency_key="x")
    assert refused.value.code == "active_turn_not_steerable"
    assert control.stats()["thread_busy_rejections"] == 1


def test_sdk_cancel_event_cancels_the_active_turn(sdk: OpenAI, control: EmulatorControl) -> None:
    session = sdk.beta.agents.sessions.create(
        environment=NONE, agent={"model": "m"}, input="[never] forever"
    )
    turn = turn_of(sdk, session)
    sdk.beta.agents.sessions.events.create(
        session.id, events=[{"type": "agent.session.input.cancel"}], idempotency_key="c-1"
    )
    assert until_ended(sdk, session.id, turn.id).status == "cancelled"
    assert sdk.beta.agents.sessions.retrieve(session.id).status == "idle"
    assert control.stats()["cancel_requests"] == {turn.id: 1}
    with pytest.raises(BadRequestError, match="no active turn"):
        sdk.beta.agents.sessions.events.create(
            session.id, events=[{"type": "agent.session.input.cancel"}]
        )


@pytest.mark.parametrize(
    ("tag", "code"),
    [("[fail]", "server_error"), ("[incomplete]", "max_output_tokens")],
)
def test_failed_turns_carry_a_coded_error(sdk: OpenAI, tag: str, code: str) -> None:
    session = sdk.beta.agents.sessions.create(
        environment=NONE, agent={"model": "m"}, input=f"{tag} now"
    )
    turn = until_ended(sdk, session.id, turn_of(sdk, session).id)
    assert turn.status == "failed"
    assert turn.error is not None and turn.error.code == code and turn.error.message
    assert sdk.beta.agents.sessions.retrieve(session.id).status == "idle"


def test_idempotency_key_on_creation_makes_one_session(
    sdk: OpenAI, control: EmulatorControl
) -> None:
    """The SDK has no `idempotency_key` argument on `sessions.create` (it has one on
    `events.create`): askq sends the header itself, as `extra_headers` does here."""
    kwargs: Any = {
        "environment": NONE,
        "agent": {"model": "m"},
        "input": "hello",
        "metadata": {"askq_job": "job-k"},
        "extra_headers": {"Idempotency-Key": "askq-job-k"},
    }
    first = sdk.beta.agents.sessions.create(**kwargs)
    again = sdk.beta.agents.sessions.create(**kwargs)
    assert again.id == first.id
    assert control.stats()["runs_by_job"] == {"job-k": 1}
    with pytest.raises(BadRequestError, match="different request"):
        sdk.beta.agents.sessions.create(**{**kwargs, "input": "something else"})


def test_sdk_lists_sessions_by_metadata_and_agent(sdk: OpenAI) -> None:
    saved = sdk.beta.agents.create(model="gpt-saved", name="helper", instructions="Be kind.")
    assert saved.object == "agent" and saved.model == "gpt-saved"
    assert sdk.beta.agents.retrieve(saved.id).name == "helper"
    mine = sdk.beta.agents.sessions.create(
        environment=NONE, agent_id=saved.id, input="hi", metadata={"askq_job": "job-1"}
    )
    assert mine.agent.model == "gpt-saved" and mine.agent.instructions == "Be kind."
    sdk.beta.agents.sessions.create(
        environment=NONE, agent={"model": "m"}, input="hi", metadata={"askq_job": "job-2"}
    )
    found = sdk.beta.agents.sessions.list(metadata={"askq_job": "job-1"}).data
    assert [s.id for s in found] == [mine.id]
    assert [s.id for s in sdk.beta.agents.sessions.list(agent_id=saved.id).data] == [mine.id]


def test_sdk_delete_session(sdk: OpenAI) -> None:
    session = sdk.beta.agents.sessions.create(environment=NONE, agent={"model": "m"}, input="hi")
    until_status(sdk, session.id, "idle")
    deleted = sdk.beta.agents.sessions.delete(session.id)
    assert deleted.deleted is True and deleted.object == "agent.session.deleted"
    with pytest.raises(NotFoundError):
        sdk.beta.agents.sessions.retrieve(session.id)


def test_raw_wire_rules(raw: httpx.Client) -> None:
    no_beta = httpx.post(raw.base_url.join("agents/sessions"), json={}, timeout=5)
    assert no_beta.status_code == 400 and no_beta.json()["error"]["code"] == "invalid_beta"
    no_input = raw.post("/agents/sessions", json={"environment": NONE, "agent": {"model": "m"}})
    assert no_input.status_code == 400 and "input" in no_input.json()["error"]["message"]
    no_model = raw.post("/agents/sessions", json={"environment": NONE, "input": "x"})
    assert no_model.status_code == 400
    unknown = raw.post(
        "/agents/sessions",
        json={"environment": NONE, "agent": {"model": "m"}, "input": "x", "temperature": 1},
    )
    assert unknown.json()["error"]["code"] == "unknown_parameter"
    created = raw.post(
        "/agents/sessions", json={"environment": NONE, "agent": {"model": "m"}, "input": "x"}
    ).json()
    accepted = raw.post(
        f"/agents/sessions/{created['id']}/events",
        json={"events": [{"type": "agent.session.input.cancel"}]},
    )
    assert accepted.status_code == 202 and accepted.content == b""
    body = json.loads(raw.get(f"/agents/sessions/{created['id']}/turns").content)
    assert body["object"] == "list" and body["data"][0]["status"] == "cancelled"
