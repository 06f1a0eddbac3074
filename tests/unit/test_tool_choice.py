"""Per-job tool_choice: accepted from every input, sent in each protocol's own shape."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from producer.inputs import parse_text
from tests.unit.test_inputs import chat_line, only_request, responses_line
from worker.adapters.assistants import AssistantsAdapter
from worker.adapters.responses import ResponsesAdapter
from worker.models import JobRecord, JobRequest


def record(**request: Any) -> JobRecord:
    now = datetime.now(UTC)
    return JobRecord(
        job_id="job_1",
        request=JobRequest(question="weather?", **request),
        thread_id="thread_1",
        created_at=now,
        deadline_at=now,
    )


def sent_body(style: str, job: JobRecord) -> dict[str, Any]:
    """The JSON body the adapter POSTs to create the run (the transport is the edge)."""
    bodies: list[dict[str, Any]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        return httpx.Response(200, json={"id": "run_1", "status": "queued"})

    client = httpx.Client(base_url="http://api.test/v1/", transport=httpx.MockTransport(answer))
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {}}}]
    if style == "assistants":
        AssistantsAdapter(client, assistant_id="asst", tool_specs=lambda _: tools).create_run(job)
    else:
        ResponsesAdapter(client, model="m", tool_specs=lambda _: tools).create_run(job)
    return bodies[0]


@pytest.mark.parametrize("style", ["assistants", "responses"])
@pytest.mark.parametrize("mode", ["auto", "none", "required"])
def test_modes_are_sent_as_strings(style: str, mode: str) -> None:
    assert sent_body(style, record(tool_choice=mode))["tool_choice"] == mode


def test_a_named_tool_in_the_assistants_shape() -> None:
    body = sent_body("assistants", record(tool_choice="lookup"))
    assert body["tool_choice"] == {"type": "function", "function": {"name": "lookup"}}


def test_a_named_tool_in_the_responses_shape() -> None:
    body = sent_body("responses", record(tool_choice="lookup"))
    assert body["tool_choice"] == {"type": "function", "name": "lookup"}


@pytest.mark.parametrize("style", ["assistants", "responses"])
def test_no_tool_choice_sends_none(style: str) -> None:
    assert "tool_choice" not in sent_body(style, record())


@pytest.mark.parametrize("bad", ["", "two words", "x" * 65, "a.b"])
def test_bad_tool_choice_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="tool_choice"):
        JobRequest(question="q", tool_choice=bad)


def test_native_line_takes_tool_choice() -> None:
    parsed = parse_text(json.dumps({"question": "q", "tool_choice": "required"}), "jsonl")
    assert only_request(parsed).tool_choice == "required"


@pytest.mark.parametrize(
    "line",
    [
        chat_line(
            {
                "model": "m",
                "messages": [{"role": "user", "content": "q"}],
                "tool_choice": {"type": "function", "function": {"name": "lookup"}},
            }
        ),
        responses_line(
            {"model": "m", "input": "q", "tool_choice": {"type": "function", "name": "lookup"}}
        ),
    ],
)
def test_batch_api_lines_name_their_tool_in_either_shape(line: dict[str, Any]) -> None:
    parsed = parse_text(json.dumps(line), "jsonl")
    assert only_request(parsed).tool_choice == "lookup"
    assert not parsed.warnings  # tool_choice is understood, not dropped


def test_batch_api_line_with_a_mode() -> None:
    line = chat_line(
        {"model": "m", "messages": [{"role": "user", "content": "q"}], "tool_choice": "none"}
    )
    assert only_request(parse_text(json.dumps(line), "jsonl")).tool_choice == "none"


@pytest.mark.parametrize("choice", ["required", "lookup"])
def test_a_forced_choice_becomes_auto_once_the_tools_answered(choice: str) -> None:
    bodies: list[dict[str, Any]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        return httpx.Response(200, json={"id": "resp_2", "status": "queued"})

    client = httpx.Client(base_url="http://api.test/v1/", transport=httpx.MockTransport(answer))
    adapter = ResponsesAdapter(client, model="m", tool_specs=lambda _: [])
    job = record(tool_choice=choice).model_copy(update={"run_id": "resp_1"})
    adapter.submit_tool_outputs(job, [("call_1", "sunny")])
    assert bodies[0]["tool_choice"] == "auto"


def test_none_stays_none_on_the_follow_up() -> None:
    bodies: list[dict[str, Any]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        return httpx.Response(200, json={"id": "resp_2", "status": "queued"})

    client = httpx.Client(base_url="http://api.test/v1/", transport=httpx.MockTransport(answer))
    adapter = ResponsesAdapter(client, model="m", tool_specs=lambda _: [])
    job = record(tool_choice="none").model_copy(update={"run_id": "resp_1"})
    adapter.submit_tool_outputs(job, [("call_1", "sunny")])
    assert bodies[0]["tool_choice"] == "none"
