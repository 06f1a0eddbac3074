"""The chat engine: each run or response is answered by an OpenAI-compatible /chat/completions.

This turns any chat server (llama.cpp, vLLM, Ollama, another emulator) into a self-hosted
Assistants v2 / Responses server: the thread or input becomes chat messages, function tools
become chat tools, and `tool_calls` in the answer become a required action or
`function_call` items.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import httpx

from emulator.chat_stream import StreamError, read_completion
from emulator.engine import Plan, ToolCall

NOT_A_COMPLETION = "Upstream answer was not a chat completion."

if TYPE_CHECKING:
    from emulator.config import EmulatorConfig
    from emulator.state import EmulatorState


def thread_to_chat(
    instructions: str,
    additional_instructions: str | None,
    messages: Iterable[dict[str, Any]],
    text_of: Callable[[dict[str, Any]], str],
) -> list[dict[str, Any]]:
    """Instructions become the system message; thread messages keep their roles."""
    system = "\n\n".join(p for p in (instructions, additional_instructions) if p)
    chat: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
    chat.extend({"role": m["role"], "content": text_of(m)} for m in messages)
    return chat


def assistant_tools_to_chat(tools: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Assistants function tools already have chat's shape; other tool types are dropped."""
    return [
        {"type": "function", "function": t["function"]}
        for t in tools
        if t.get("type") == "function"
    ]


def response_tools_to_chat(tools: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Responses function tools are flat (`name` at the top); chat nests them under `function`."""
    out = []
    for t in tools:
        if t.get("type") != "function":
            continue
        fn = {k: t[k] for k in ("name", "description", "parameters", "strict") if k in t}
        out.append({"type": "function", "function": fn})
    return out


def assistant_tool_call_message(calls: Iterable[ToolCall]) -> dict[str, Any]:
    return {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in calls
        ],
    }


def tool_result_message(call_id: str, output: str) -> dict[str, Any]:
    return {"role": "tool", "tool_call_id": call_id, "content": output}


def chat_tool_choice(choice: Any) -> Any:
    """Either protocol's tool_choice in chat's shape: modes as they are, a named function
    nested under `function` (Responses names it flat)."""
    if isinstance(choice, str):
        return choice if choice in ("auto", "none", "required") else None
    if isinstance(choice, dict) and choice.get("type") == "function":
        function = choice.get("function")
        name = function.get("name") if isinstance(function, dict) else choice.get("name")
        if isinstance(name, str):
            return {"type": "function", "function": {"name": name}}
    return None


def _answers_tools(messages: list[dict[str, Any]]) -> bool:
    """True when tool results came after the last user message (a follow-up round)."""
    for message in reversed(messages):
        if message.get("role") == "tool":
            return True
        if message.get("role") == "user":
            return False
    return False


def _request_body(
    config: EmulatorConfig,
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]],
    options: dict[str, Any],
    max_tokens: int | None,
) -> dict[str, Any]:
    body: dict[str, Any] = {**config.upstream_extra_body}
    body.update(model=config.upstream_model or "default", messages=messages)
    if tools:
        body["tools"] = tools
        tool_choice = chat_tool_choice(options.get("tool_choice"))
        if tool_choice not in (None, "none") and _answers_tools(messages):
            # a forced call (required, or one named) was made: the model may answer now,
            # else it would be forced to call again and again
            tool_choice = "auto"
        if tool_choice is not None:
            body["tool_choice"] = tool_choice
        if "parallel_tool_calls" in options:
            body["parallel_tool_calls"] = options["parallel_tool_calls"]
    for key in ("temperature", "top_p"):
        if options.get(key) is not None:
            body[key] = options[key]
    cap = max_tokens if max_tokens is not None else config.upstream_max_tokens
    if cap is not None:
        body["max_tokens"] = cap
    return body


async def chat_plan(
    state: EmulatorState,
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]],
    *,
    options: dict[str, Any],
    max_tokens: int | None,
) -> Plan:
    """Ask the upstream model; any failure becomes a failed plan (the run fails, not the server).

    Cancelling the task that awaits this closes the upstream connection, which is how
    llama.cpp, vLLM and Ollama learn to stop generating; a call still waiting for an
    upstream slot is dropped before it is sent.
    """
    config = state.config
    if not config.upstream_url:
        return Plan(outcome="failed", error_message="The chat engine has no upstream_url.")
    headers = {}
    if config.upstream_api_key:
        headers["Authorization"] = f"Bearer {config.upstream_api_key}"
    url = config.upstream_url.rstrip("/") + "/chat/completions"
    async with state.upstream_slot():
        config = state.config  # the settings in force when the request is sent
        body = _request_body(config, messages, tools, options, max_tokens)
        body.update(stream=True, stream_options={"include_usage": True})
        try:
            # the whole call, a long generation included, within upstream_timeout_s
            async with asyncio.timeout(config.upstream_timeout_s):
                return await _ask(state.http(), url, body, headers, config.upstream_timeout_s)
        except (TimeoutError, httpx.TimeoutException) as exc:
            return Plan(
                outcome="failed",
                error_code="upstream_timeout",
                error_message=(
                    f"Upstream {url} timed out ({type(exc).__name__}) after "
                    f"upstream_timeout_s={config.upstream_timeout_s:g} s; raise it with "
                    "askq emulator --upstream-timeout-s, or cap answers with "
                    "--upstream-max-tokens."
                ),
            )
        except StreamError as exc:
            return Plan(outcome="failed", error_message=str(exc))
        except Exception as exc:  # the upstream is unreachable: the run fails, the server lives on
            return Plan(outcome="failed", error_message=f"Upstream request failed: {exc!r}")


async def _ask(
    http: httpx.AsyncClient,
    url: str,
    body: dict[str, Any],
    headers: dict[str, str],
    timeout_s: float,
) -> Plan:
    async with http.stream("POST", url, json=body, headers=headers, timeout=timeout_s) as reply:
        if reply.status_code >= 400:
            await reply.aread()
            return _plan_from_error(reply)
        try:
            data = await read_completion(reply)
        except (ValueError, KeyError, TypeError):
            return Plan(
                outcome="failed", error_message="Upstream answer was not a chat completion."
            )
    return _plan_from_completion(data)


def _plan_from_error(reply: httpx.Response) -> Plan:
    if reply.status_code == 429:
        return Plan(
            outcome="failed",
            error_code="rate_limit_exceeded",
            error_message=f"Upstream rate limited: {reply.text[:500]}",
        )
    return Plan(
        outcome="failed",
        error_message=f"Upstream answered {reply.status_code}: {reply.text[:500]}",
    )


def _plan_from_completion(data: dict[str, Any]) -> Plan:
    try:
        choice = data["choices"][0]
        message = choice["message"]
    except (KeyError, IndexError, TypeError):
        return Plan(outcome="failed", error_message=NOT_A_COMPLETION)
    usage = data.get("usage") or {}
    plan = Plan(
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        completion_tokens=int(usage.get("completion_tokens") or 0),
    )
    calls = message.get("tool_calls") or []
    if calls:
        plan.tool_calls = [
            ToolCall(
                c.get("id") or f"call_{i}",
                c["function"]["name"],
                _arguments(c["function"].get("arguments")),
            )
            for i, c in enumerate(calls)
        ]
        return plan
    plan.answers = [message.get("content") or ""]
    if choice.get("finish_reason") == "length":
        plan.outcome = "incomplete"
    return plan


def _arguments(raw: Any) -> str:
    if isinstance(raw, str):
        return raw
    return json.dumps(raw if raw is not None else {})


def items_to_chat(
    instructions: str | None, items: Iterable[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Responses items (history + input) as chat messages; adjacent function calls share one
    assistant message, as chat servers expect."""
    chat: list[dict[str, Any]] = (
        [{"role": "system", "content": instructions}] if instructions else []
    )
    for item in items:
        kind = item.get("type")
        if kind == "message":
            role = "system" if item.get("role") == "developer" else item.get("role", "user")
            content = item.get("content")
            if isinstance(content, list):
                content = "\n".join(
                    p.get("text", "") for p in content if isinstance(p, dict) and "text" in p
                )
            chat.append({"role": role, "content": content or ""})
        elif kind == "function_call":
            call = {
                "id": item["call_id"],
                "type": "function",
                "function": {
                    "name": item.get("name", ""),
                    "arguments": item.get("arguments", "{}"),
                },
            }
            last = chat[-1] if chat else None
            if last is not None and last.get("role") == "assistant" and last.get("tool_calls"):
                last["tool_calls"].append(call)
            else:
                chat.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            chat.append(tool_result_message(item["call_id"], item.get("output", "")))
    return chat
