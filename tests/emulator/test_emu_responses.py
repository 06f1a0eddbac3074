"""Responses API (background mode) and conversations, through the SDK and raw HTTP."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from emu_helpers import wait_until
from openai import BadRequestError, NotFoundError, OpenAI
from openai.types.responses import Response

from emulator import EmulatorControl, RunningEmulator

RESPONSE_TERMINAL = {"completed", "failed", "cancelled", "incomplete"}
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}


@pytest.fixture
def raw(emulator: RunningEmulator, control: EmulatorControl) -> httpx.Client:
    """No beta header: the Responses API needs none."""
    return httpx.Client(base_url=emulator.url, timeout=10)


def poll(sdk: OpenAI, response: Response) -> Response:
    def done() -> Response | None:
        current = sdk.responses.retrieve(response.id)
        return current if current.status in RESPONSE_TERMINAL else None

    return wait_until(done)


def test_sdk_background_response_completes(sdk: OpenAI, control: EmulatorControl) -> None:
    created = sdk.responses.create(
        model="gpt-test",
        input="What is 12 * 12?",
        background=True,
        metadata={"askq_job": "job-r"},
    )
    assert created.status == "queued" and created.background is True
    assert created.usage is None and created.output == []
    final = poll(sdk, created)
    assert final.status == "completed"
    assert "144" in final.output_text
    assert final.usage is not None and final.usage.total_tokens > 0
    assert final.metadata == {"askq_job": "job-r"}
    stats = control.stats()
    assert stats["runs_by_job"] == {"job-r": 1}
    assert stats["gets_by_run"][created.id] >= 1


def test_sdk_foreground_response_is_synchronous(sdk: OpenAI) -> None:
    response = sdk.responses.create(model="m", input=[{"role": "user", "content": "What is 7-10?"}])
    assert response.status == "completed"
    assert response.output_text == "7-10 = -3"
    message = response.output[0]
    assert message.type == "message" and message.content[0].type == "output_text"


def test_sdk_cancel_background(sdk: OpenAI, control: EmulatorControl) -> None:
    created = sdk.responses.create(model="m", input="[never] forever", background=True)
    cancelled = sdk.responses.cancel(created.id)
    assert cancelled.status == "cancelled"
    again = sdk.responses.cancel(created.id)  # idempotent
    assert again.status == "cancelled"
    assert sdk.responses.retrieve(created.id).status == "cancelled"
    done = poll(sdk, sdk.responses.create(model="m", input="hi", background=True))
    unchanged = sdk.responses.cancel(done.id)  # terminal: returned as it is
    assert unchanged.status == "completed" and unchanged.output_text == done.output_text
    assert control.stats()["cancel_requests"][created.id] == 2


def test_cancel_synchronous_response_is_400(sdk: OpenAI) -> None:
    response = sdk.responses.create(model="m", input="hi")
    with pytest.raises(BadRequestError):
        sdk.responses.cancel(response.id)


def test_sdk_function_call_round_trip(sdk: OpenAI, control: EmulatorControl) -> None:
    first = poll(
        sdk,
        sdk.responses.create(
            model="m",
            input='Weather in Paris? [tool:get_weather {"city": "Paris"}] [tool:clock]',
            tools=[WEATHER],  # type: ignore[list-item]
            background=True,
        ),
    )
    assert first.status == "completed"
    calls = [item for item in first.output if item.type == "function_call"]
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [
        ("get_weather", {"city": "Paris"}),
        ("clock", {}),
    ]
    assert all(c.call_id.startswith("call_") and c.status == "completed" for c in calls)
    follow = poll(
        sdk,
        sdk.responses.create(
            model="m",
            previous_response_id=first.id,
            input=[
                {"type": "function_call_output", "call_id": calls[0].call_id, "output": "sunny"},
                {"type": "function_call_output", "call_id": calls[1].call_id, "output": "noon"},
            ],
            tools=[WEATHER],  # type: ignore[list-item]
            background=True,
        ),
    )
    assert follow.status == "completed" and follow.previous_response_id == first.id
    assert "get_weather returned: sunny" in follow.output_text
    assert "clock returned: noon" in follow.output_text
    assert control.stats()["tool_output_submissions"] == {first.id: 1}


def test_function_outputs_must_match_calls(raw: httpx.Client) -> None:
    first = raw.post("/responses", json={"model": "m", "input": "[tool:a] [tool:b]"}).json()
    call_a, call_b = (item["call_id"] for item in first["output"])
    missing = raw.post(
        "/responses",
        json={
            "model": "m",
            "previous_response_id": first["id"],
            "input": [{"type": "function_call_output", "call_id": call_a, "output": "1"}],
        },
    )
    assert missing.status_code == 400 and call_b in missing.json()["error"]["message"]
    unknown = raw.post(
        "/responses",
        json={
            "model": "m",
            "previous_response_id": first["id"],
            "input": [
                {"type": "function_call_output", "call_id": call_a, "output": "1"},
                {"type": "function_call_output", "call_id": call_b, "output": "2"},
                {"type": "function_call_output", "call_id": "call_nope", "output": "3"},
            ],
        },
    )
    assert unknown.status_code == 400 and "call_nope" in unknown.json()["error"]["message"]


def test_conversation_lock_and_items(sdk: OpenAI, control: EmulatorControl) -> None:
    conversation = sdk.conversations.create(metadata={"topic": "t"})
    assert conversation.id.startswith("conv_")
    running = sdk.responses.create(
        model="m", input="[never] hold it", background=True, conversation=conversation.id
    )
    assert running.conversation is not None and running.conversation.id == conversation.id
    with pytest.raises(BadRequestError) as info:
        sdk.responses.create(model="m", input="second", conversation={"id": conversation.id})
    assert info.value.code == "conversation_locked"
    assert control.stats()["conversation_locked_rejections"] == 1
    sdk.responses.cancel(running.id)
    after = sdk.responses.create(model="m", input="What is 5 + 5?", conversation=conversation.id)
    assert after.output_text == "5 + 5 = 10"
    items = sdk.conversations.items.list(conversation.id, order="asc")
    roles = [(i.type, getattr(i, "role", None)) for i in items.data]
    assert roles == [("message", "user"), ("message", "user"), ("message", "assistant")]
    assert sdk.conversations.retrieve(conversation.id).metadata == {"topic": "t"}


def test_function_calls_on_a_conversation(sdk: OpenAI) -> None:
    conversation = sdk.conversations.create()
    first = sdk.responses.create(model="m", input="[tool:lookup {}]", conversation=conversation.id)
    call = first.output[0]
    assert call.type == "function_call"
    with pytest.raises(BadRequestError):  # the open call must be answered first
        sdk.responses.create(model="m", input="ignore it", conversation=conversation.id)
    done = sdk.responses.create(
        model="m",
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "42"}],
        conversation=conversation.id,
    )
    assert done.output_text == "lookup returned: 42"


def test_strict_unknown_parameter(raw: httpx.Client) -> None:
    reply = raw.post("/responses", json={"model": "m", "input": "x", "max_tokens": 5})
    assert reply.status_code == 400
    error = reply.json()["error"]
    assert error["param"] == "max_tokens" and error["code"] == "unknown_parameter"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "no model"}, "model"),
        ({"model": "m", "input": "x", "background": True, "store": False}, "store"),
        ({"model": "m", "input": "x", "previous_response_id": "r", "conversation": "c"}, None),
        ({"model": "m", "input": "x", "stream": True}, "stream"),
        ({"model": "m", "input": "x", "metadata": {"k": 1}}, "metadata.k"),
    ],
)
def test_bad_requests(raw: httpx.Client, body: dict[str, Any], param: str | None) -> None:
    reply = raw.post("/responses", json=body)
    assert reply.status_code == 400, reply.text
    if param:
        assert reply.json()["error"]["param"] == param


def test_unknown_ids(sdk: OpenAI, raw: httpx.Client) -> None:
    with pytest.raises(NotFoundError):
        sdk.responses.retrieve("resp_missing")
    with pytest.raises(NotFoundError):
        sdk.conversations.retrieve("conv_missing")
    reply = raw.post(
        "/responses", json={"model": "m", "input": "x", "previous_response_id": "resp_x"}
    )
    assert reply.status_code == 400


def test_store_false_is_not_retrievable(raw: httpx.Client) -> None:
    created = raw.post("/responses", json={"model": "m", "input": "x", "store": False}).json()
    assert created["status"] == "completed" and created["store"] is False
    assert raw.get(f"/responses/{created['id']}").status_code == 404


def test_tags_on_responses(raw: httpx.Client) -> None:
    def final(text: str, **extra: Any) -> dict[str, Any]:
        return raw.post("/responses", json={"model": "m", "input": text, **extra}).json()

    failed = final("[fail]")
    assert failed["status"] == "failed" and failed["error"]["code"] == "server_error"
    incomplete = final("[incomplete]")
    assert incomplete["status"] == "incomplete"
    assert incomplete["incomplete_details"] == {"reason": "max_output_tokens"}
    expired = final("[expire]")
    assert expired["status"] == "failed"  # no `expired` status in the Responses API
    multi = final("hi [multi]")
    assert [o["type"] for o in multi["output"]] == ["message", "message"]
    short = final("one two three four five", max_output_tokens=2)
    assert short["status"] == "incomplete" and short["usage"]["output_tokens"] == 2


def test_poll_after_header(raw: httpx.Client, control: EmulatorControl) -> None:
    created = raw.post("/responses", json={"model": "m", "input": "x", "background": True}).json()
    assert "openai-poll-after-ms" not in raw.get(f"/responses/{created['id']}").headers
    control.configure(poll_after_ms=250)
    reply = raw.get(f"/responses/{created['id']}")
    assert reply.headers["openai-poll-after-ms"] == "250"
