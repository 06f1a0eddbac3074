"""The chat bridge's own settings and cancels, against an upstream that records what it sees."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from emu_helpers import BETA
from openai import OpenAI

from emulator import EmulatorConfig, EmulatorControl, serve_in_subprocess, serve_in_thread
from emulator.server import LISTENING
from producer.local_redis import free_port
from tests.conftest import wait_until

Scope = dict[str, Any]


class RecordingUpstream:
    """A /chat/completions that records every request body and every client that hung up.

    While `hold` is set it never answers, like a model generating a long answer, so the only
    way a request ends is the client closing its connection.
    """

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.hung_up = 0
        self.hold = True

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        raw = b""
        while True:
            message = await receive()
            raw += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.bodies.append(json.loads(raw))
        while self.hold:
            try:
                message = await asyncio.wait_for(receive(), 0.05)
            except TimeoutError:
                continue
            if message["type"] == "http.disconnect":
                self.hung_up += 1
                return
        answer = {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "done"},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": json.dumps(answer).encode()})


@pytest.fixture
def upstream() -> Iterator[tuple[RecordingUpstream, str]]:
    app = RecordingUpstream()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    wait_until(lambda: server.started)
    yield app, f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    app.hold = False
    server.should_exit = True
    thread.join(timeout=10)
    sock.close()


def bridge(url: str, **fields: Any) -> EmulatorConfig:
    return EmulatorConfig(engine="chat", upstream_url=url, upstream_model="m", **fields)


def start_run(api: httpx.Client, question: str = "hello", **body: Any) -> dict[str, Any]:
    thread = {"messages": [{"role": "user", "content": question}]}
    reply = api.post("/threads/runs", json={"assistant_id": "a", "thread": thread, **body})
    reply.raise_for_status()
    run: dict[str, Any] = reply.json()
    return run


def run_url(run: dict[str, Any]) -> str:
    return f"/threads/{run['thread_id']}/runs/{run['id']}"


def test_cancelling_a_run_hangs_up_on_the_upstream(
    upstream: tuple[RecordingUpstream, str],
) -> None:
    model, url = upstream
    with serve_in_thread(bridge(url)) as front, httpx.Client(base_url=front.url) as api:
        api.headers.update(BETA)
        run = start_run(api)
        wait_until(lambda: len(model.bodies) == 1, what="the upstream request")
        api.post(f"{run_url(run)}/cancel").raise_for_status()
        wait_until(lambda: model.hung_up == 1, timeout=5, what="the upstream to see the hang-up")
        wait_until(lambda: api.get(run_url(run)).json()["status"] == "cancelled")


def test_cancelling_a_response_hangs_up_on_the_upstream(
    upstream: tuple[RecordingUpstream, str],
) -> None:
    model, url = upstream
    with serve_in_thread(bridge(url)) as front, httpx.Client(base_url=front.url) as api:
        response = api.post(
            "/responses", json={"model": "m", "input": "hello", "background": True}
        ).json()
        wait_until(lambda: len(model.bodies) == 1, what="the upstream request")
        cancelled = api.post(f"/responses/{response['id']}/cancel").json()
        assert cancelled["status"] == "cancelled"
        wait_until(lambda: model.hung_up == 1, timeout=5, what="the upstream to see the hang-up")


def test_a_run_waiting_for_an_upstream_slot_is_never_sent_once_cancelled(
    upstream: tuple[RecordingUpstream, str],
) -> None:
    model, url = upstream
    config = bridge(url, upstream_concurrency=1)
    with serve_in_thread(config) as front, httpx.Client(base_url=front.url, headers=BETA) as api:
        first, second = start_run(api, "one"), start_run(api, "two")
        wait_until(lambda: len(model.bodies) == 1, what="the first request")
        api.post(f"{run_url(second)}/cancel").raise_for_status()
        api.post(f"{run_url(first)}/cancel").raise_for_status()
        wait_until(lambda: model.hung_up == 1, timeout=5, what="the first hang-up")
        # waiters get the slot in order: had "two" still waited, it would go before "three"
        start_run(api, "three")
        wait_until(lambda: len(model.bodies) >= 2, timeout=5, what="the next request")
        assert [b["messages"][-1]["content"] for b in model.bodies] == ["one", "three"]


def test_raising_the_concurrency_at_run_time_lets_waiting_runs_go(
    upstream: tuple[RecordingUpstream, str],
) -> None:
    model, url = upstream
    config = bridge(url, upstream_concurrency=1)
    with serve_in_thread(config) as front, httpx.Client(base_url=front.url, headers=BETA) as api:
        start_run(api, "one")
        start_run(api, "two")
        wait_until(lambda: len(model.bodies) == 1, what="the first request")
        EmulatorControl(front.base).configure(upstream_concurrency=2)
        wait_until(lambda: len(model.bodies) == 2, timeout=5, what="the second request")


def test_timeout_changed_at_run_time_applies_and_names_itself(
    upstream: tuple[RecordingUpstream, str],
) -> None:
    _, url = upstream
    with serve_in_thread(bridge(url, upstream_timeout_s=600)) as front:
        EmulatorControl(front.base).configure(upstream_timeout_s=0.5)
        with httpx.Client(base_url=front.url, headers=BETA) as api:
            run = start_run(api)
            final = wait_until(
                lambda: (r := api.get(run_url(run)).json())["status"] == "failed" and r,
                timeout=10,
            )
    error = final["last_error"]
    assert error["code"] == "upstream_timeout"
    assert "upstream_timeout_s=0.5" in error["message"]
    assert "--upstream-timeout-s" in error["message"]


def test_default_output_cap_and_extra_body_reach_the_upstream(
    upstream: tuple[RecordingUpstream, str],
) -> None:
    model, url = upstream
    model.hold = False
    hints = {"chat_template_kwargs": {"enable_thinking": False}}
    config = bridge(url, upstream_max_tokens=300, upstream_extra_body=hints)
    with serve_in_thread(config) as front, httpx.Client(base_url=front.url, headers=BETA) as api:
        start_run(api, "no cap")
        start_run(api, "own cap", max_completion_tokens=7)
        api.post("/responses", json={"model": "m", "input": "resp", "max_output_tokens": 9})
        wait_until(lambda: len(model.bodies) == 3, what="three upstream requests")
    caps = {b["messages"][-1]["content"]: b["max_tokens"] for b in model.bodies}
    assert caps == {"no cap": 300, "own cap": 7, "resp": 9}
    assert all(b["chat_template_kwargs"] == {"enable_thinking": False} for b in model.bodies)


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("required", "required"),
        ({"type": "function", "function": {"name": "get_weather"}}, "named"),
    ],
)
def test_tool_choice_reaches_the_upstream_in_chat_shape(
    upstream: tuple[RecordingUpstream, str], choice: Any, expected: str
) -> None:
    model, url = upstream
    model.hold = False
    tool = {"type": "function", "function": {"name": "get_weather", "parameters": {}}}
    named = {"type": "function", "function": {"name": "get_weather"}}
    with serve_in_thread(bridge(url)) as front, httpx.Client(base_url=front.url) as api:
        api.headers.update(BETA)
        start_run(api, tools=[tool], tool_choice=choice)
        flat = choice if isinstance(choice, str) else {"type": "function", "name": "get_weather"}
        api.post(
            "/responses",
            json={
                "model": "m",
                "input": "q",
                "tools": [{"type": "function", "name": "get_weather", "parameters": {}}],
                "tool_choice": flat,
            },
        )
        wait_until(lambda: len(model.bodies) == 2, what="two upstream requests")
    want = "required" if expected == "required" else named
    assert [b["tool_choice"] for b in model.bodies] == [want, want]


def test_a_restarted_bridge_goes_on_with_its_threads_runs_and_responses(redis_url: str) -> None:
    with serve_in_thread(EmulatorConfig()) as model:  # scripted chat: [run_time=S] is slow
        config = bridge(model.url, state_redis_url=redis_url, state_prefix="t-bridge:")
        port = free_port()
        first = serve_in_subprocess(config, port=port)
        with httpx.Client(base_url=first.url, headers=BETA, timeout=10) as api:
            done = start_run(api, "before")
            wait_until(lambda: api.get(run_url(done)).json()["status"] == "completed")
            slow = start_run(api, "[run_time=2] during")
            response = api.post(
                "/responses",
                json={"model": "m", "input": "[run_time=2] during too", "background": True},
            ).json()
            first.stop()  # both upstream calls are cut
            with serve_in_subprocess(config, port=port):
                finished = wait_until(
                    lambda: (r := api.get(run_url(slow)).json())["status"] == "completed" and r,
                    timeout=20,
                )
                assert finished["id"] == slow["id"]
                messages = api.get(f"/threads/{slow['thread_id']}/messages").json()["data"]
                assert 'received: "during"' in messages[0]["content"][0]["text"]["value"]
                old = api.get(f"/threads/{done['thread_id']}/messages").json()["data"]
                assert [m["role"] for m in old] == ["assistant", "user"]
                answered = wait_until(
                    lambda: (
                        (r := api.get(f"/responses/{response['id']}").json())["status"]
                        == "completed"
                        and r
                    ),
                    timeout=20,
                )
                assert 'received: "during too"' in answered["output"][0]["content"][0]["text"]


def test_without_a_state_store_a_restart_forgets(redis_url: str) -> None:
    with serve_in_thread(EmulatorConfig()) as model:
        config, port = bridge(model.url), free_port()
        with serve_in_subprocess(config, port=port) as first:
            api = httpx.Client(base_url=first.url, headers=BETA, timeout=10)
            run = start_run(api, "[run_time=2] during")
        with serve_in_subprocess(config, port=port):
            assert api.get(run_url(run)).status_code == 404
        api.close()


def test_a_forced_tool_choice_is_auto_once_the_tool_answered(
    upstream: tuple[RecordingUpstream, str],
) -> None:
    model, url = upstream
    model.hold = False
    tool = {"type": "function", "function": {"name": "get_weather", "parameters": {}}}
    with serve_in_thread(bridge(url)) as front, httpx.Client(base_url=front.url) as api:
        api.headers.update(BETA)
        api.post(
            "/responses",
            json={
                "model": "m",
                "input": [
                    {"role": "user", "content": "weather?"},
                    {
                        "type": "function_call",
                        "call_id": "c1",
                        "name": "get_weather",
                        "arguments": "{}",
                    },
                    {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
                ],
                "tools": [{"type": "function", "name": "get_weather", "parameters": {}}],
                "tool_choice": "required",
            },
        )
        start_run(api, tools=[tool], tool_choice="required")
        wait_until(lambda: len(model.bodies) == 2, what="two upstream requests")
    assert [b["tool_choice"] for b in model.bodies] == ["auto", "required"]


def test_the_scripted_chat_route_streams_as_openai_does() -> None:
    """The bridge streams every upstream call; the scripted engine's stream is what the
    chained-emulator tests read back, so it is checked against the SDK's own reader."""
    with serve_in_thread(EmulatorConfig()) as model:
        sdk = OpenAI(base_url=model.url, api_key="any")
        chunks = list(
            sdk.chat.completions.create(
                model="m",
                messages=[{"role": "user", "content": '[tool:get_weather {"city": "Oslo"}]'}],
                tools=[{"type": "function", "function": {"name": "get_weather", "parameters": {}}}],
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        text = "".join(
            c.choices[0].delta.content or ""
            for c in sdk.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "say hi"}], stream=True
            )
            if c.choices
        )
    fragments = [
        call.function.arguments or ""
        for c in chunks
        if c.choices
        for call in c.choices[0].delta.tool_calls or []
        if call.function
    ]
    assert json.loads("".join(fragments)) == {"city": "Oslo"}
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0
    assert text == 'The askq emulator received: "say hi"'


def test_askq_emulator_takes_every_bridge_setting_as_an_option(redis_url: str) -> None:
    """Issue 14's report: `askq emulator --upstream-timeout-s 600` was "No such option"."""
    options = {
        "--upstream-timeout-s": "600",
        "--upstream-max-tokens": "77",
        "--upstream-concurrency": "3",
        "--upstream-extra-body": '{"chat_template_kwargs": {"enable_thinking": false}}',
        "--state-redis-url": redis_url,
        "--state-prefix": "t-cli:",
    }
    args = [arg for pair in options.items() for arg in pair]
    command = [sys.executable, "-m", "producer", "emulator", "--engine", "chat", "--port", "0"]
    command += ["--upstream", "http://127.0.0.1:9/v1", *args]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith(LISTENING), line
        config = wait_until(
            lambda: _config(line[len(LISTENING) :].strip()), what="the emulator to answer"
        )
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert config["upstream_timeout_s"] == 600
    assert config["upstream_max_tokens"] == 77 and config["upstream_concurrency"] == 3
    assert config["upstream_extra_body"] == {"chat_template_kwargs": {"enable_thinking": False}}
    assert config["state_prefix"] == "t-cli:" and config["state_redis_url"]


def _config(base: str) -> dict[str, Any] | None:
    try:
        with EmulatorControl(base) as control:
            return control.config()
    except httpx.TransportError:
        return None
