"""POST /v1/chat/completions answered by the scripted engine.

It lets one emulator be the upstream of another (engine="chat"), so the chat engine is tested
end to end without a real model, and gives askq a trivially cheap chat endpoint.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from emulator.engine import (
    first_plan,
    new_id,
    parse_script,
    plan_after_tools,
    truncate_plan,
)
from emulator.wire import ApiError, content_text, json_response, read_json


async def chat_completions(request: Request) -> Response:
    body = await read_json(request)
    model = body.get("model")
    messages = body.get("messages")
    if not model:
        raise ApiError(400, "Missing required parameter: 'model'.", param="model")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "Missing required parameter: 'messages'.", param="messages")
    last_user = max(
        (i for i, m in enumerate(messages) if isinstance(m, dict) and m.get("role") == "user"),
        default=-1,
    )
    question = content_text(messages[last_user].get("content")) if last_user >= 0 else ""
    script = parse_script(question)
    # Tool results answer the calls made since the question (an assistant message names them).
    names: dict[str, str] = {}
    results: list[tuple[str, str]] = []
    for m in messages[last_user + 1 :]:
        if not isinstance(m, dict):
            continue
        for call in m.get("tool_calls") or []:
            names[call.get("id", "")] = call.get("function", {}).get("name", "")
        if m.get("role") == "tool":
            results.append(
                (names.get(m.get("tool_call_id", ""), "tool"), content_text(m.get("content")))
            )
    prompt = " ".join(content_text(m.get("content")) for m in messages if isinstance(m, dict))
    tools = body.get("tools") or []
    if results:
        plan = plan_after_tools(script, results, prompt)
    elif script.tools and tools and body.get("tool_choice") != "none":
        plan = first_plan(script, prompt, lambda: new_id("call_"))
    else:
        plan = first_plan(
            type(script)(question=script.question, outcome=script.outcome, multi=script.multi),
            prompt,
            lambda: new_id("call_"),
        )
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    plan = truncate_plan(plan, max_tokens if isinstance(max_tokens, int) else None)
    if script.run_time_s:  # chat is synchronous: only an explicit [run_time=S] makes it slow
        await asyncio.sleep(script.run_time_s)
    if plan.outcome == "failed":
        raise ApiError(500, plan.error_message or "The askq emulator failed.", type="server_error")
    message: dict[str, Any] = {
        "role": "assistant",
        "content": None,
        "refusal": None,
        "annotations": [],
    }
    if plan.tool_calls:
        finish = "tool_calls"
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in plan.tool_calls
        ]
    else:
        finish = "length" if plan.outcome == "incomplete" else "stop"
        message["content"] = "\n\n".join(plan.answers)
    completion = {
        "id": new_id("chatcmpl-"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
        "usage": {
            "prompt_tokens": plan.prompt_tokens,
            "completion_tokens": plan.completion_tokens,
            "total_tokens": plan.prompt_tokens + plan.completion_tokens,
        },
        "system_fingerprint": None,
        "service_tier": "default",
    }
    if body.get("stream"):
        with_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return StreamingResponse(_events(completion, with_usage), media_type="text/event-stream")
    return json_response(completion)


async def _events(completion: dict[str, Any], with_usage: bool) -> AsyncIterator[str]:
    """The completion as OpenAI streams it: a role chunk, content word by word, each tool
    call with its arguments in two fragments, the finish reason, then usage if asked for."""
    choice = completion["choices"][0]
    message = choice["message"]
    head = {k: completion[k] for k in ("id", "created", "model", "system_fingerprint")}
    head["object"] = "chat.completion.chunk"

    def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
        choices = [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
        return f"data: {json.dumps({**head, 'choices': choices})}\n\n"

    yield chunk({"role": "assistant", "content": ""})
    for word in re.findall(r"\S+\s*|\s+", message.get("content") or ""):
        yield chunk({"content": word})
    for index, call in enumerate(message.get("tool_calls") or []):
        arguments = call["function"]["arguments"]
        half = len(arguments) // 2
        first = {"name": call["function"]["name"], "arguments": arguments[:half]}
        yield chunk(
            {
                "tool_calls": [
                    {"index": index, "id": call["id"], "type": "function", "function": first}
                ]
            }
        )
        yield chunk({"tool_calls": [{"index": index, "function": {"arguments": arguments[half:]}}]})
    yield chunk({}, choice["finish_reason"])
    if with_usage:
        yield f"data: {json.dumps({**head, 'choices': [], 'usage': completion['usage']})}\n\n"
    yield "data: [DONE]\n\n"


CHAT_ROUTES = [Route("/v1/chat/completions", chat_completions, methods=["POST"])]
