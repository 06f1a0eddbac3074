"""POST /v1/chat/completions answered by the scripted engine.

It lets one emulator be the upstream of another (engine="chat"), so the chat engine is tested
end to end without a real model, and gives askq a trivially cheap chat endpoint.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
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
    if body.get("stream"):
        raise ApiError(400, "The askq emulator does not stream; omit 'stream'.", param="stream")
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
    return json_response(
        {
            "id": new_id("chatcmpl-"),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
            ],
            "usage": {
                "prompt_tokens": plan.prompt_tokens,
                "completion_tokens": plan.completion_tokens,
                "total_tokens": plan.prompt_tokens + plan.completion_tokens,
            },
            "system_fingerprint": None,
            "service_tier": "default",
        }
    )


CHAT_ROUTES = [Route("/v1/chat/completions", chat_completions, methods=["POST"])]
