"""Chat completions, the chat engine (one emulator forwarding to another), and serving modes."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from emu_helpers import BETA, wait_until
from openai import OpenAI

from emulator import (
    EmulatorConfig,
    EmulatorControl,
    RunningEmulator,
    serve_in_subprocess,
    serve_in_thread,
)
from emulator.server import LISTENING

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def test_chat_completions_scripted(sdk: OpenAI) -> None:
    plain = sdk.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "What is 6 * 7?"}]
    )
    assert plain.choices[0].message.content == "6 * 7 = 42"
    assert plain.choices[0].finish_reason == "stop"
    untooled = sdk.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "[tool:get_weather {}]"}]
    )
    assert untooled.choices[0].message.tool_calls is None  # no tools offered, no calls
    asked = sdk.chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": 'Weather? [tool:get_weather {"city": "Oslo"}]'}],
        tools=[TOOL],  # type: ignore[list-item]
    )
    choice = asked.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.tool_calls
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    answered = sdk.chat.completions.create(
        model="m",
        messages=[
            {"role": "user", "content": 'Weather? [tool:get_weather {"city": "Oslo"}]'},
            choice.message.model_dump(exclude_none=True),  # type: ignore[list-item]
            {"role": "tool", "tool_call_id": call.id, "content": "snow"},
        ],
        tools=[TOOL],  # type: ignore[list-item]
    )
    assert answered.choices[0].message.content == "get_weather returned: snow"


@pytest.fixture(scope="module")
def chained() -> Iterator[tuple[RunningEmulator, RunningEmulator]]:
    """A chat-engine emulator whose model is another (scripted) emulator's chat endpoint."""
    with serve_in_thread(EmulatorConfig()) as upstream:
        config = EmulatorConfig(
            engine="chat",
            upstream_url=upstream.url,
            upstream_model="scripted",
            upstream_api_key="sk-up",
            run_time_s=0.05,
        )
        with serve_in_thread(config) as front:
            yield front, upstream


def test_chat_engine_assistants_tool_call(chained: tuple[RunningEmulator, RunningEmulator]) -> None:
    front, upstream = chained
    client = OpenAI(base_url=front.url, api_key="x", max_retries=0)
    run = client.beta.threads.create_and_run_poll(
        assistant_id="asst_chat",
        instructions="Use tools.",
        tools=[TOOL],  # type: ignore[list-item]
        thread={
            "messages": [
                {"role": "user", "content": 'Weather? [tool:get_weather {"city": "Rome"}]'}
            ]
        },
        poll_interval_ms=20,
    )
    assert run.status == "requires_action" and run.required_action is not None
    call = run.required_action.submit_tool_outputs.tool_calls[0]
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Rome"}
    run = client.beta.threads.runs.submit_tool_outputs_and_poll(
        run_id=run.id,
        thread_id=run.thread_id,
        tool_outputs=[{"tool_call_id": call.id, "output": "hot"}],
        poll_interval_ms=20,
    )
    assert run.status == "completed" and run.usage is not None
    answer = client.beta.threads.messages.list(run.thread_id, run_id=run.id).data[0]
    assert answer.content[0].text.value == "get_weather returned: hot"  # type: ignore[union-attr]
    assert EmulatorControl(upstream.base).stats()["requests"]["POST /v1/chat/completions"] >= 2


def test_chat_engine_responses(chained: tuple[RunningEmulator, RunningEmulator]) -> None:
    front, _ = chained
    client = OpenAI(base_url=front.url, api_key="x", max_retries=0)
    created = client.responses.create(model="m", input="What is 9 * 9?", background=True)
    final = wait_until(
        lambda: (r := client.responses.retrieve(created.id)).status == "completed" and r
    )
    assert final.output_text == "9 * 9 = 81"
    tools = [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}]
    first = client.responses.create(model="m", input="[tool:get_weather {}]", tools=tools)  # type: ignore[arg-type]
    call = first.output[0]
    assert call.type == "function_call"
    follow = client.responses.create(
        model="m",
        previous_response_id=first.id,
        tools=tools,  # type: ignore[arg-type]
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "mild"}],
    )
    assert follow.output_text == "get_weather returned: mild"


def test_chat_engine_upstream_failure_fails_the_run() -> None:
    config = EmulatorConfig(engine="chat", upstream_url="http://127.0.0.1:9/v1", run_time_s=0)
    with serve_in_thread(config) as front, httpx.Client(base_url=front.url, headers=BETA) as api:
        run = api.post("/threads/runs", json={"assistant_id": "a"}).json()
        url = f"/threads/{run['thread_id']}/runs/{run['id']}"
        final = wait_until(lambda: (r := api.get(url).json())["status"] == "failed" and r)
        assert final["last_error"]["code"] == "server_error"


def test_serve_in_subprocess() -> None:
    with serve_in_subprocess(EmulatorConfig(run_time_s=0.01, poll_after_ms=10)) as emu:
        assert emu.url.endswith("/v1")
        with httpx.Client(base_url=emu.url, headers=BETA) as api:
            run = api.post("/threads/runs", json={"assistant_id": "a"}).json()
            reply = api.get(f"/threads/{run['thread_id']}/runs/{run['id']}")
            assert reply.headers["openai-poll-after-ms"] == "10"
        assert EmulatorControl(emu.base).stats()["runs_created"] == 1
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{emu.base}/_emulator/health")


def test_cli_options() -> None:
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "emulator",
            "--port",
            "0",
            "--run-time",
            "0.5",
            "--fail-429",
            "0.25",
        ],
        cwd=root,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith(LISTENING)
        base = line[len(LISTENING) :].strip()
        deadline = time.monotonic() + 10
        while True:
            try:
                config = EmulatorControl(base).config()
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline
                time.sleep(0.02)
        assert config["run_time_s"] == 0.5 and config["fail_429"] == 0.25
    finally:
        proc.terminate()
        proc.wait(timeout=10)
