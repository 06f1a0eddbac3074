"""Edges of the Agents adapter that the emulator never produces (a small unit test at the
HTTP edge: httpx.MockTransport answers as the SDK's types say the API may)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from producer.client import Client
from producer.inputs import parse_text
from worker.adapters.agents import AgentsAdapter
from worker.errors import FinalApiError, InputError
from worker.models import JobRecord, JobRequest, Message
from worker.settings import load_settings

Handler = Callable[[httpx.Request], httpx.Response]


def adapter(handler: Handler, agent_id: str = "agent_1", model: str = "") -> AgentsAdapter:
    client = httpx.Client(base_url="http://api/v1/", transport=httpx.MockTransport(handler))
    return AgentsAdapter(client, agent_id=agent_id, model=model, tool_specs=lambda job: [])


def job(**request: Any) -> JobRecord:
    return JobRecord(
        job_id="job_1",
        request=JobRequest(**({"question": "hi"} | request)),
        thread_id="sess_1",
        thread_created=True,
        run_id="turn_1",
        deadline_at=datetime.now(UTC),
    )


def turn(status: str, **fields: Any) -> dict[str, Any]:
    return {"id": "turn_1", "session_id": "sess_1", "status": status, "usage": None} | fields


def test_a_turn_waiting_for_an_approval_askq_cannot_give_fails_clearly() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/turns/turn_1"):
            return httpx.Response(200, json=turn("waiting"))
        action = {"type": "mcp_approval_request", "request_id": "r", "turn_id": "turn_1"}
        return httpx.Response(200, json={"id": "sess_1", "required_actions": [action]})

    snap = adapter(handler).poll(job())
    assert snap.status == "failed"
    assert snap.error is not None and snap.error.code == "unsupported_action"


def test_function_call_arguments_objects_become_json_text() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/turns/turn_1"):
            return httpx.Response(200, json=turn("waiting"))
        call = {
            "type": "function_call",
            "call_id": "call_1",
            "name": "add",
            "arguments": {"a": 1},
            "turn_id": "turn_1",
        }
        other = call | {"call_id": "call_2", "turn_id": "turn_0"}  # another turn's: not ours
        return httpx.Response(200, json={"id": "sess_1", "required_actions": [call, other]})

    snap = adapter(handler).poll(job())
    assert snap.status == "waiting"
    assert [(c.id, json.loads(c.arguments)) for c in snap.tool_calls] == [("call_1", {"a": 1})]


def test_answer_skips_commentary_and_a_token_limit_is_incomplete() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/items"):
            items = [
                {
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": "q"}],
                },
                {
                    "type": "message",
                    "role": "assistant",
                    "phase": "commentary",
                    "content": [{"type": "output_text", "text": "thinking aloud"}],
                },
                {
                    "type": "message",
                    "role": "assistant",
                    "phase": "final_answer",
                    "content": [{"type": "output_text", "text": "the answer"}],
                },
            ]
            return httpx.Response(200, json={"data": items, "has_more": False})
        usage = {"input_tokens": 3, "output_tokens": 2, "total_tokens": 5}
        return httpx.Response(200, json=turn("completed", usage=usage))

    snap = adapter(handler).poll(job())
    assert (snap.status, snap.answer) == ("completed", "the answer")
    assert snap.usage is not None and snap.usage.total_tokens == 5

    def limited(request: httpx.Request) -> httpx.Response:
        error = {"code": "max_output_tokens", "message": "limit"}
        return httpx.Response(200, json=turn("failed", error=error))

    snap = adapter(limited).poll(job())
    assert snap.status == "incomplete" and snap.error is not None


def test_sessions_take_user_messages_and_need_an_agent_or_a_model() -> None:
    def never(request: httpx.Request) -> httpx.Response:
        raise AssertionError("no request may be sent")

    earlier = [Message(role="assistant", content="a"), Message(role="user", content="b")]
    with pytest.raises(FinalApiError, match="user messages only"):
        adapter(never).create_thread(job(question=None, messages=earlier))
    with pytest.raises(FinalApiError) as missing:
        adapter(never, agent_id="").create_thread(job())
    assert missing.value.code == "no_agent"
    settings = load_settings(api_style="agents", redis_url="redis://127.0.0.1:1/0")
    with pytest.raises(InputError, match="ASKQ_AGENT_ID"):
        Client(settings).ask("hello")


def test_batch_lines_name_agents_and_sessions() -> None:
    lines = [
        {"question": "a", "agent_id": "agent_9", "session_id": "sess_9"},
        {"question": "b", "thread_id": "sess_9", "session_id": "sess_9"},
        {"question": "c", "thread_id": "thread_1", "session_id": "sess_2"},
    ]
    parsed = parse_text("\n".join(json.dumps(line) for line in lines), "jsonl")
    first, second = (item.request for item in parsed.items)
    assert (first.agent_id, first.thread_id, second.thread_id) == ("agent_9", "sess_9", "sess_9")
    (error,) = parsed.errors
    assert error.line == 3 and "not both" in error.message
    csv_text = "question,session_id,agent_id\nhello,sess_5,agent_5\n"
    (item,) = parse_text(csv_text, "csv").items
    assert (item.request.thread_id, item.request.agent_id) == ("sess_5", "agent_5")
