"""Assistants v2 behaviour, through the official SDK and raw HTTP."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from emu_helpers import get_run, question_run, thread_texts, wait_status, wait_until
from openai import BadRequestError, NotFoundError, OpenAI

from emulator import EmulatorControl, RunningEmulator

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

TERMINAL = {"completed", "failed", "cancelled", "expired", "incomplete"}
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


# --- through the official SDK -------------------------------------------------------------


def test_sdk_create_and_run_poll_answers_arithmetic(sdk: OpenAI) -> None:
    run = sdk.beta.threads.create_and_run_poll(
        assistant_id="asst_any",
        thread={"messages": [{"role": "user", "content": "What is 17 * 23?"}]},
        metadata={"askq_job": "job-1"},
        poll_interval_ms=20,
    )
    assert run.status == "completed"
    assert run.metadata == {"askq_job": "job-1"}
    assert run.usage is not None and run.usage.total_tokens > 0
    messages = sdk.beta.threads.messages.list(run.thread_id, run_id=run.id)
    assert len(messages.data) == 1
    message = messages.data[0]
    assert message.role == "assistant" and message.run_id == run.id
    assert message.content[0].type == "text"
    assert "391" in message.content[0].text.value


def test_sdk_function_call_round_trip(sdk: OpenAI) -> None:
    thread = sdk.beta.threads.create(
        messages=[
            {
                "role": "user",
                "content": 'Weather? [tool:get_weather {"city": "Paris"}] [tool:clock]',
            }
        ]
    )
    run = sdk.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id="asst_any", tools=[WEATHER_TOOL], poll_interval_ms=20
    )
    assert run.status == "requires_action"
    assert run.required_action is not None
    calls = run.required_action.submit_tool_outputs.tool_calls
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == [
        ("get_weather", {"city": "Paris"}),
        ("clock", {}),  # not offered in tools, requested anyway: askq must cope
    ]
    run = sdk.beta.threads.runs.submit_tool_outputs_and_poll(
        run_id=run.id,
        thread_id=thread.id,
        tool_outputs=[
            {"tool_call_id": calls[0].id, "output": "sunny, 21C"},
            {"tool_call_id": calls[1].id, "output": "noon"},
        ],
        poll_interval_ms=20,
    )
    assert run.status == "completed"
    answer = sdk.beta.threads.messages.list(thread.id, run_id=run.id).data[0]
    text = answer.content[0].text.value  # type: ignore[union-attr]
    assert "get_weather returned: sunny, 21C" in text
    assert "clock returned: noon" in text


def test_sdk_assistant_create_and_retrieve(sdk: OpenAI) -> None:
    assistant = sdk.beta.assistants.create(
        model="gpt-test", instructions="Be brief.", tools=[WEATHER_TOOL]
    )
    assert sdk.beta.assistants.retrieve(assistant.id).model == "gpt-test"
    thread = sdk.beta.threads.create(messages=[{"role": "user", "content": "hello"}])
    run = sdk.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id)
    assert run.model == "gpt-test" and run.instructions == "Be brief."
    assert run.tools[0].type == "function"
    with pytest.raises(NotFoundError):
        sdk.beta.assistants.retrieve("asst_missing")


# --- protocol rules -----------------------------------------------------------------------


def test_missing_beta_header_is_400(emulator: RunningEmulator, control: EmulatorControl) -> None:
    reply = httpx.post(f"{emulator.url}/threads", json={})
    assert reply.status_code == 400
    error = reply.json()["error"]
    assert error["code"] == "invalid_beta"
    assert "OpenAI-Beta" in error["message"]
    assert set(error) == {"message", "type", "param", "code"}


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/threads", {"messages": [], "colour": "red"}),
        ("/threads/runs", {"assistant_id": "a", "custom_id": "x"}),
        ("/threads/runs", {"assistant_id": "a", "thread": {"messages": [], "junk": 1}}),
        ("/assistants", {"model": "m", "file_ids": []}),
    ],
)
def test_unknown_body_field_is_400(api: httpx.Client, path: str, body: dict[str, Any]) -> None:
    reply = api.post(path, json=body)
    assert reply.status_code == 400
    assert reply.json()["error"]["message"].startswith("Unrecognized request argument supplied: ")


def test_unknown_field_on_run_and_message(api: httpx.Client) -> None:
    thread = api.post("/threads", json={}).json()
    reply = api.post(f"/threads/{thread['id']}/runs", json={"assistant_id": "a", "max_tokens": 5})
    assert reply.json()["error"]["message"] == "Unrecognized request argument supplied: max_tokens"
    reply = api.post(
        f"/threads/{thread['id']}/messages", json={"role": "user", "content": "x", "name": "bob"}
    )
    assert reply.json()["error"]["message"] == "Unrecognized request argument supplied: name"


def test_every_defined_run_field_is_accepted(api: httpx.Client) -> None:
    thread = api.post("/threads", json={}).json()
    body = {
        "assistant_id": "asst_x",
        "model": "gpt-x",
        "instructions": "i",
        "additional_instructions": "more",
        "additional_messages": [{"role": "user", "content": "What is 2 + 2?"}],
        "tools": [WEATHER_TOOL],
        "metadata": {"askq_job": "j"},
        "temperature": 0.5,
        "top_p": 0.9,
        "max_prompt_tokens": 1000,
        "max_completion_tokens": 500,
        "truncation_strategy": {"type": "last_messages", "last_messages": 5},
        "tool_choice": "auto",
        "parallel_tool_calls": False,
        "response_format": "auto",
        "stream": False,
    }
    reply = api.post(f"/threads/{thread['id']}/runs", json=body)
    assert reply.status_code == 200, reply.text
    run = reply.json()
    assert run["temperature"] == 0.5 and run["parallel_tool_calls"] is False
    assert run["truncation_strategy"]["last_messages"] == 5
    wait_status(api, run, TERMINAL)
    assert thread_texts(api, thread["id"])[-1] == "2 + 2 = 4"


def test_run_needs_assistant_id_and_rejects_stream(api: httpx.Client) -> None:
    thread = api.post("/threads", json={}).json()
    reply = api.post(f"/threads/{thread['id']}/runs", json={})
    assert reply.status_code == 400 and reply.json()["error"]["param"] == "assistant_id"
    reply = api.post(f"/threads/{thread['id']}/runs", json={"assistant_id": "a", "stream": True})
    assert reply.status_code == 400 and reply.json()["error"]["param"] == "stream"


def test_metadata_limits(api: httpx.Client) -> None:
    too_many = {f"k{i}": "v" for i in range(17)}
    reply = api.post("/threads/runs", json={"assistant_id": "a", "metadata": too_many})
    assert reply.status_code == 400 and reply.json()["error"]["param"] == "metadata"
    sixteen = {f"k{i}": "v" for i in range(16)}
    assert api.post("/threads/runs", json={"assistant_id": "a", "metadata": sixteen}).is_success


def test_unknown_ids_are_404(api: httpx.Client) -> None:
    reply = api.get("/threads/thread_nope")
    assert reply.status_code == 404
    assert reply.json()["error"]["message"] == "No thread found with id 'thread_nope'."
    thread = api.post("/threads", json={}).json()
    reply = api.get(f"/threads/{thread['id']}/runs/run_nope")
    assert reply.status_code == 404
    assert "run_nope" in reply.json()["error"]["message"]
    assert api.get("/no/such/route").status_code == 404


def test_thread_busy_refuses_messages_and_runs(api: httpx.Client, control: EmulatorControl) -> None:
    control.configure(run_time_s=0.5)
    run = question_run(api, "hello")
    thread_id = run["thread_id"]
    reply = api.post(f"/threads/{thread_id}/messages", json={"role": "user", "content": "more"})
    assert reply.status_code == 400
    assert reply.json()["error"]["message"] == (
        f"Can't add messages to {thread_id} while a run {run['id']} is active."
    )
    reply = api.post(f"/threads/{thread_id}/runs", json={"assistant_id": "a"})
    assert reply.status_code == 400
    assert reply.json()["error"]["message"] == (
        f"Thread {thread_id} already has an active run {run['id']}."
    )
    assert control.stats()["thread_busy_rejections"] == 2
    wait_status(api, run, {"completed"})
    reply = api.post(f"/threads/{thread_id}/messages", json={"role": "user", "content": "more"})
    assert reply.status_code == 200
    assert api.post(f"/threads/{thread_id}/runs", json={"assistant_id": "a"}).status_code == 200


def test_run_lifecycle_and_timestamps(api: httpx.Client, control: EmulatorControl) -> None:
    control.configure(run_time_s=0.6)
    run = question_run(api, "What is 1 + 1?")
    assert run["status"] == "queued" and run["usage"] is None and run["started_at"] is None
    seen = {run["status"]}

    def finished() -> dict[str, Any] | None:
        current = get_run(api, run)
        seen.add(current["status"])
        return current if current["status"] in TERMINAL else None

    final = wait_until(finished)
    assert final["status"] == "completed"
    assert "in_progress" in seen
    assert final["completed_at"] >= final["started_at"] >= final["created_at"]
    assert final["expires_at"] is None
    usage = final["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0


def test_messages_pagination(api: httpx.Client) -> None:
    messages = [{"role": "user", "content": f"m{i}"} for i in range(5)]
    thread = api.post("/threads", json={"messages": messages}).json()
    base = f"/threads/{thread['id']}/messages"
    page = api.get(base, params={"limit": 2}).json()
    assert [m["content"][0]["text"]["value"] for m in page["data"]] == ["m4", "m3"]
    assert page["has_more"] is True and page["first_id"] == page["data"][0]["id"]
    page2 = api.get(base, params={"limit": 2, "after": page["last_id"]}).json()
    assert [m["content"][0]["text"]["value"] for m in page2["data"]] == ["m2", "m1"]
    page3 = api.get(base, params={"limit": 2, "after": page2["last_id"]}).json()
    assert [m["content"][0]["text"]["value"] for m in page3["data"]] == ["m0"]
    assert page3["has_more"] is False
    asc = api.get(base, params={"order": "asc", "before": page["data"][1]["id"]}).json()
    assert [m["content"][0]["text"]["value"] for m in asc["data"]] == ["m0", "m1", "m2"]
    assert api.get(base, params={"limit": 101}).status_code == 400


def test_messages_filter_by_run_and_list_runs(api: httpx.Client) -> None:
    run1 = question_run(api, "What is 2 * 3?")
    wait_status(api, run1, {"completed"})
    thread_id = run1["thread_id"]
    api.post(f"/threads/{thread_id}/messages", json={"role": "user", "content": "What is 9 - 4?"})
    run2 = api.post(f"/threads/{thread_id}/runs", json={"assistant_id": "a"}).json()
    wait_status(api, run2, {"completed"})
    assert thread_texts(api, thread_id, run_id=run1["id"]) == ["2 * 3 = 6"]
    assert thread_texts(api, thread_id, run_id=run2["id"]) == ["9 - 4 = 5"]
    runs = api.get(f"/threads/{thread_id}/runs", params={"limit": 1}).json()
    assert [r["id"] for r in runs["data"]] == [run2["id"]] and runs["has_more"] is True
    older = api.get(f"/threads/{thread_id}/runs", params={"after": runs["last_id"]}).json()
    assert [r["id"] for r in older["data"]] == [run1["id"]]


# --- submit_tool_outputs ------------------------------------------------------------------


def _requires_action(api: httpx.Client, text: str) -> tuple[dict[str, Any], list[str]]:
    run = question_run(api, text, tools=[WEATHER_TOOL])
    run = wait_status(api, run, {"requires_action"})
    call_ids = [c["id"] for c in run["required_action"]["submit_tool_outputs"]["tool_calls"]]
    return run, call_ids


def _submit(
    api: httpx.Client, run: dict[str, Any], outputs: list[dict[str, Any]]
) -> httpx.Response:
    return api.post(
        f"/threads/{run['thread_id']}/runs/{run['id']}/submit_tool_outputs",
        json={"tool_outputs": outputs},
    )


def test_submit_tool_outputs_validation(api: httpx.Client, control: EmulatorControl) -> None:
    run, (a, b) = _requires_action(api, '[tool:get_weather {}] [tool:get_weather {"x": [1]}]')
    partial = _submit(api, run, [{"tool_call_id": a, "output": "1"}])
    assert partial.status_code == 400 and a in partial.json()["error"]["message"]
    dup = _submit(
        api, run, [{"tool_call_id": a, "output": "1"}, {"tool_call_id": a, "output": "2"}]
    )
    assert dup.status_code == 400
    unknown = _submit(
        api, run, [{"tool_call_id": a, "output": "1"}, {"tool_call_id": "call_zzz", "output": "2"}]
    )
    assert unknown.status_code == 400
    extra = _submit(api, run, [{"tool_call_id": a, "output": "1", "is_error": True}])
    assert extra.json()["error"]["message"].startswith("Unrecognized request argument")
    assert get_run(api, run)["status"] == "requires_action"  # failed calls changed nothing
    ok = _submit(api, run, [{"tool_call_id": b, "output": "B"}, {"tool_call_id": a, "output": "A"}])
    assert ok.status_code == 200 and ok.json()["required_action"] is None
    again = _submit(
        api, run, [{"tool_call_id": a, "output": "1"}, {"tool_call_id": b, "output": "2"}]
    )
    assert (
        again.status_code == 400
        and "do not accept tool outputs" in again.json()["error"]["message"]
    )
    wait_status(api, run, {"completed"})
    assert thread_texts(api, run["thread_id"], run_id=run["id"]) == [
        "get_weather returned: A\nget_weather returned: B"
    ]
    assert control.stats()["tool_output_submissions"][run["id"]] == 6


def test_submit_before_requires_action_is_400(api: httpx.Client, control: EmulatorControl) -> None:
    control.configure(run_time_s=5)
    run = question_run(api, "[tool:get_weather {}]")
    reply = _submit(api, run, [{"tool_call_id": "call_x", "output": "1"}])
    assert reply.status_code == 400
    # queued for a short while, then in_progress for the rest of the 5 s: a slow machine may
    # send the submission after the switch
    assert reply.json()["error"]["message"] in {
        f'Runs in status "{status}" do not accept tool outputs.'
        for status in ("queued", "in_progress")
    }


def test_requires_action_expires(api: httpx.Client, control: EmulatorControl) -> None:
    control.configure(requires_action_timeout_s=0.3)
    run, _ = _requires_action(api, "[tool:get_weather {}]")
    assert run["expires_at"] is not None
    final = wait_status(api, run, {"expired"})
    assert final["required_action"] is None and final["usage"] is not None
    assert api.post(
        f"/threads/{run['thread_id']}/messages", json={"role": "user", "content": "x"}
    ).is_success


# --- cancel -------------------------------------------------------------------------------


def test_cancel_goes_through_cancelling(api: httpx.Client, control: EmulatorControl) -> None:
    control.configure(cancel_time_s=0.3)
    run = question_run(api, "[never] think forever")
    wait_status(api, run, {"in_progress"})
    url = f"/threads/{run['thread_id']}/runs/{run['id']}/cancel"
    reply = api.post(url)
    assert reply.status_code == 200 and reply.json()["status"] == "cancelling"
    assert get_run(api, run)["status"] == "cancelling"
    assert api.post(url).status_code == 400  # already cancelling
    final = wait_status(api, run, {"cancelled"})
    assert final["cancelled_at"] is not None
    assert thread_texts(api, run["thread_id"], run_id=run["id"]) == []
    assert control.stats()["cancel_requests"][run["id"]] == 2


def test_cancel_requires_action_run(api: httpx.Client) -> None:
    run, _ = _requires_action(api, "[tool:get_weather {}]")
    reply = api.post(f"/threads/{run['thread_id']}/runs/{run['id']}/cancel")
    assert reply.json()["status"] == "cancelling" and reply.json()["required_action"] is None
    wait_status(api, run, {"cancelled"})


def test_cancel_terminal_run_is_400(sdk: OpenAI) -> None:
    run = sdk.beta.threads.create_and_run_poll(
        assistant_id="a",
        thread={"messages": [{"role": "user", "content": "hi"}]},
        poll_interval_ms=20,
    )
    assert run.status == "completed"
    with pytest.raises(BadRequestError) as info:
        sdk.beta.threads.runs.cancel(run.id, thread_id=run.thread_id)
    assert "Cannot cancel run with status 'completed'." in str(info.value)


# --- tags ---------------------------------------------------------------------------------


def test_tag_fail(api: httpx.Client) -> None:
    final = wait_status(api, question_run(api, "[fail] please"), TERMINAL)
    assert final["status"] == "failed" and final["failed_at"] is not None
    assert final["last_error"]["code"] == "server_error" and final["last_error"]["message"]
    assert thread_texts(api, final["thread_id"], run_id=final["id"]) == []


def test_tag_incomplete(api: httpx.Client) -> None:
    final = wait_status(api, question_run(api, "[incomplete] long essay"), TERMINAL)
    assert final["status"] == "incomplete"
    assert final["incomplete_details"] == {"reason": "max_completion_tokens"}


def test_max_completion_tokens_makes_incomplete(api: httpx.Client) -> None:
    run = question_run(api, "a question with several words in it", max_completion_tokens=2)
    final = wait_status(api, run, TERMINAL)
    assert final["status"] == "incomplete" and final["usage"]["completion_tokens"] == 2


def test_tag_expire(api: httpx.Client) -> None:
    final = wait_status(api, question_run(api, "[expire] slow"), TERMINAL)
    assert final["status"] == "expired"


def test_tag_never_stays_in_progress(api: httpx.Client, control: EmulatorControl) -> None:
    control.configure(run_time_s=0.05)
    run = question_run(api, "[never]")
    wait_status(api, run, {"in_progress"})
    # A run created later with the same run time finishes; the [never] one does not.
    wait_status(api, question_run(api, "fast one"), {"completed"})
    assert get_run(api, run)["status"] == "in_progress"
    assert control.stats()["active_runs"] == 1


def test_tag_multi_leaves_two_messages(api: httpx.Client) -> None:
    final = wait_status(api, question_run(api, "What is 3 ** 2? [multi]"), TERMINAL)
    texts = thread_texts(api, final["thread_id"], run_id=final["id"])
    assert len(texts) == 2 and texts[0] == "3 ** 2 = 9"


def test_tag_run_time(api: httpx.Client, control: EmulatorControl) -> None:
    control.configure(run_time_s=0.05)
    run = question_run(api, "[run_time=30] slow one")
    fast = question_run(api, "fast one")
    wait_status(api, fast, {"completed"})
    assert get_run(api, run)["status"] == "in_progress"


def test_echo_answer_is_deterministic(api: httpx.Client) -> None:
    final = wait_status(api, question_run(api, "Who wrote Hamlet? [multi]"), TERMINAL)
    texts = thread_texts(api, final["thread_id"], run_id=final["id"])
    assert texts[0] == 'The askq emulator received: "Who wrote Hamlet?"'
