"""Responses API (background mode included) and conversations.

Same lazy progress as Assistants runs: a background response stores when it leaves `queued`
and when it ends; reads apply what the clock has passed. A response that asks for tools ends
`completed` with `function_call` items, as the real API does; the client answers in a new
response (`previous_response_id` or the same conversation) with `function_call_output` items.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from emulator import chat_engine
from emulator.engine import (
    Plan,
    Script,
    first_plan,
    new_id,
    parse_script,
    plan_after_tools,
    truncate_plan,
)
from emulator.state import EmulatorState, queued_for
from emulator.wire import (
    ApiError,
    check_metadata,
    check_type,
    content_text,
    json_response,
    list_page,
    read_json,
    reject_unknown_parameter,
)

RESPONSE_FIELDS = frozenset(
    {
        "model",
        "input",
        "instructions",
        "background",
        "store",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "previous_response_id",
        "conversation",
        "metadata",
        "temperature",
        "top_p",
        "max_output_tokens",
        "max_tool_calls",
        "text",
        "truncation",
        "user",
        "include",
        "stream",
        "stream_options",
        "reasoning",
        "service_tier",
        "prompt",
        "prompt_cache_key",
        "safety_identifier",
        "top_logprobs",
    }
)
CONVERSATION_FIELDS = frozenset({"items", "metadata"})
TERMINAL = frozenset({"completed", "failed", "cancelled", "incomplete"})


@dataclass(eq=False)
class Conversation:
    id: str
    created_at: int
    metadata: dict[str, str]
    items: list[dict[str, Any]] = field(default_factory=list)
    active: ResponseRecord | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "conversation",
            "created_at": self.created_at,
            "metadata": self.metadata,
        }


@dataclass(eq=False)
class ResponseRecord:
    id: str
    created: float
    model: str
    background: bool
    store: bool
    instructions: str | None
    tools: list[dict[str, Any]]
    options: dict[str, Any]
    previous: ResponseRecord | None
    conversation: Conversation | None
    metadata: dict[str, str]
    input_items: list[dict[str, Any]]
    script: Script
    run_time: float
    queued_until: float
    work_end: float
    plan: Plan | None
    phase: str = "work"  # work | done
    status: str = "queued"
    ended_at: float = math.inf
    output: list[dict[str, Any]] = field(default_factory=list)
    error: dict[str, Any] | None = None
    incomplete_details: dict[str, Any] | None = None
    completed_at: int | None = None
    chat_messages: list[dict[str, Any]] = field(default_factory=list)
    announced: bool = False
    upstream: asyncio.Task[None] | None = None  # the chat engine's call, cancelled with it

    def predicted_end(self) -> float:
        return self.work_end if self.phase == "work" else self.ended_at

    def to_dict(self) -> dict[str, Any]:
        usage = None
        if self.phase == "done" and self.plan is not None:
            usage = {
                "input_tokens": self.plan.prompt_tokens,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": self.plan.completion_tokens,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": self.plan.prompt_tokens + self.plan.completion_tokens,
            }
        opts = self.options
        return {
            "id": self.id,
            "object": "response",
            "created_at": int(self.created),
            "status": self.status,
            "background": self.background,
            "completed_at": self.completed_at,
            "error": self.error,
            "incomplete_details": self.incomplete_details,
            "instructions": self.instructions,
            "max_output_tokens": opts.get("max_output_tokens"),
            "max_tool_calls": opts.get("max_tool_calls"),
            "model": self.model,
            "output": self.output,
            "parallel_tool_calls": opts.get("parallel_tool_calls", True),
            "previous_response_id": self.previous.id if self.previous else None,
            "conversation": {"id": self.conversation.id} if self.conversation else None,
            "reasoning": opts.get("reasoning") or {"effort": None, "summary": None},
            "service_tier": opts.get("service_tier") or "default",
            "store": self.store,
            "temperature": opts.get("temperature", 1.0),
            "text": opts.get("text") or {"format": {"type": "text"}, "verbosity": "medium"},
            "tool_choice": opts.get("tool_choice") or "auto",
            "tools": self.tools,
            "top_p": opts.get("top_p", 1.0),
            "truncation": opts.get("truncation") or "disabled",
            "usage": usage,
            "user": opts.get("user"),
            "metadata": self.metadata,
        }


# --- items ------------------------------------------------------------------------------


def _item_text(item: dict[str, Any]) -> str:
    return content_text(item.get("content"))


def _normalize_input(raw: Any) -> list[dict[str, Any]]:
    """The request's `input` as stored items with ids (what conversations and input_items show)."""
    if raw is None:
        return []
    if isinstance(raw, str):
        raw = [{"role": "user", "content": raw}]
    if not isinstance(raw, list):
        raise ApiError(
            400, "Invalid type for 'input': expected a string or an array.", param="input"
        )
    items: list[dict[str, Any]] = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise ApiError(
                400, f"Invalid type for 'input[{i}]': expected an object.", param=f"input[{i}]"
            )
        kind = item.get("type", "message" if "role" in item else None)
        if kind == "message":
            role = item.get("role")
            if role not in ("user", "assistant", "system", "developer"):
                raise ApiError(
                    400,
                    f"Invalid value: '{role}'. Supported values are: 'user', 'assistant', "
                    "'system', and 'developer'.",
                    param=f"input[{i}].role",
                    code="invalid_value",
                )
            content = item.get("content")
            if isinstance(content, str):
                part = "output_text" if role == "assistant" else "input_text"
                content = [{"type": part, "text": content}]
            elif not isinstance(content, list):
                raise ApiError(400, f"Missing required parameter: 'input[{i}].content'.")
            items.append(
                {
                    "type": "message",
                    "id": item.get("id") or new_id("msg_"),
                    "status": "completed",
                    "role": role,
                    "content": content,
                }
            )
        elif kind == "function_call_output":
            if not isinstance(item.get("call_id"), str):
                raise ApiError(400, f"Missing required parameter: 'input[{i}].call_id'.")
            output = item.get("output", "")
            items.append(
                {
                    "type": "function_call_output",
                    "id": item.get("id") or new_id("fco_"),
                    "call_id": item["call_id"],
                    "output": output if isinstance(output, str) else str(output),
                    "status": "completed",
                }
            )
        elif kind == "function_call":
            items.append({"id": item.get("id") or new_id("fc_"), "status": "completed", **item})
        elif kind is None:
            raise ApiError(400, f"Missing required parameter: 'input[{i}].type'.")
        else:
            items.append({"id": item.get("id") or new_id("item_"), **item})
    return items


def _history(rec: ResponseRecord | None) -> list[dict[str, Any]]:
    """Every item of a previous_response_id chain, oldest first."""
    chain: list[ResponseRecord] = []
    while rec is not None:
        chain.append(rec)
        rec = rec.previous
    items: list[dict[str, Any]] = []
    for r in reversed(chain):
        items.extend(r.input_items)
        items.extend(r.output)
    return items


def _question(items: list[dict[str, Any]]) -> str | None:
    for item in reversed(items):
        if item.get("type") == "message" and item.get("role") == "user":
            return _item_text(item)
    return None


def _text_output(text: str, status: str = "completed") -> dict[str, Any]:
    return {
        "type": "message",
        "id": new_id("msg_"),
        "status": status,
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}],
    }


# --- lazy progress ----------------------------------------------------------------------


def _finish(state: EmulatorState, rec: ResponseRecord, at: float) -> None:
    plan = rec.plan
    assert plan is not None
    rec.phase, rec.ended_at = "done", at
    if plan.tool_calls:
        rec.status = "completed"
        for call in plan.tool_calls:
            rec.output.append(
                {
                    "type": "function_call",
                    "id": new_id("fc_"),
                    "call_id": call.id,
                    "name": call.name,
                    "arguments": call.arguments,
                    "status": "completed",
                }
            )
            state.function_calls[call.id] = (rec.id, call.name)
    elif plan.outcome == "completed":
        rec.status = "completed"
        rec.output.extend(_text_output(a) for a in plan.answers)
    elif plan.outcome == "incomplete":
        rec.status = "incomplete"
        rec.incomplete_details = {"reason": "max_output_tokens"}
        rec.output.extend(_text_output(a, "incomplete") for a in plan.answers)
    else:
        # The Responses API has no `expired` status: [expire] ends as a failure here.
        rec.status = "failed"
        message = plan.error_message or "The askq emulator expired this response ([expire] tag)."
        rec.error = {"code": plan.error_code, "message": message}
    if rec.status == "completed":
        rec.completed_at = int(at)
    _release(rec)
    state.touch(rec, rec.conversation)


def _release(rec: ResponseRecord) -> None:
    conv = rec.conversation
    if conv is not None:
        if rec.output:
            conv.items.extend(rec.output)
        if conv.active is rec:
            conv.active = None


def _announce(state: EmulatorState, rec: ResponseRecord) -> tuple[str, dict[str, Any]] | None:
    """The webhook event for a background response that ended (once)."""
    advance(state, rec, state.now())
    if rec.phase != "done" or rec.announced or not rec.background:
        return None
    rec.announced = True
    return f"response.{rec.status}", {"id": rec.id}


def _watch(state: EmulatorState, rec: ResponseRecord) -> None:
    state.webhooks.at(rec.work_end, lambda: _announce(state, rec))


def advance(state: EmulatorState, rec: ResponseRecord, now: float) -> None:
    if rec.phase != "work":
        return
    if now < rec.queued_until:
        rec.status = "queued"
    elif now < rec.work_end or rec.plan is None:
        rec.status = "in_progress"
    else:
        _finish(state, rec, rec.work_end)


# --- handlers ---------------------------------------------------------------------------


def _state(request: Request) -> EmulatorState:
    return request.app.state.emulator  # type: ignore[no-any-return]


def _response_not_found(response_id: str) -> ApiError:
    return ApiError(404, f"Response with id '{response_id}' not found.")


def _get_response(state: EmulatorState, response_id: str) -> ResponseRecord:
    rec = state.responses.get(response_id)
    if rec is None or not rec.store:
        raise _response_not_found(response_id)
    return rec


def _serves_conversations(request: Request) -> None:
    if not _state(request).config.conversations:
        raise ApiError(404, f"Invalid URL ({request.method} {request.url.path})")


def _get_conversation(state: EmulatorState, conv_id: str) -> Conversation:
    conv = state.conversations.get(conv_id)
    if conv is None:
        raise ApiError(404, f"Conversation with id '{conv_id}' not found.")
    return conv


def _locked(state: EmulatorState) -> ApiError:
    state.stats.conversation_locked_rejections += 1
    return ApiError(
        400,
        "Another process is currently operating on this conversation. Please retry in a few "
        "seconds.",
        param="conversation",
        code="conversation_locked",
    )


def _check_lock(state: EmulatorState, conv: Conversation, now: float) -> None:
    if conv.active is not None:
        advance(state, conv.active, now)
        if conv.active is not None and conv.active.phase == "work":
            raise _locked(state)


def _validate(body: dict[str, Any]) -> None:
    reject_unknown_parameter(body, RESPONSE_FIELDS)
    if not body.get("model"):
        raise ApiError(
            400,
            "Missing required parameter: 'model'.",
            param="model",
            code="missing_required_parameter",
        )
    check_type(body, "model", (str,), nullable=False)
    if body.get("stream"):
        raise ApiError(400, "The askq emulator does not stream; omit 'stream'.", param="stream")
    for name in ("background", "store", "parallel_tool_calls"):
        check_type(body, name, (bool,))
    for name in ("temperature", "top_p"):
        check_type(body, name, (int, float))
    check_type(body, "max_output_tokens", (int,))
    check_type(body, "instructions", (str,))
    check_type(body, "previous_response_id", (str,))
    check_type(body, "tools", (list,))
    check_type(body, "include", (list,))
    check_type(body, "text", (dict,))
    check_metadata(body)
    if body.get("background") and body.get("store") is False:
        raise ApiError(
            400, "Background mode requires 'store' to be true.", param="store", code="invalid_value"
        )
    if body.get("previous_response_id") and body.get("conversation"):
        raise ApiError(
            400,
            "Mutually exclusive parameters: Ensure you are only providing one of: "
            "'previous_response_id' or 'conversation'.",
            param="previous_response_id",
            code="mutually_exclusive_parameters",
        )
    if body.get("truncation") not in (None, "auto", "disabled"):
        raise ApiError(
            400, "Invalid value for 'truncation'.", param="truncation", code="invalid_value"
        )


def _conversation_of(state: EmulatorState, raw: Any) -> Conversation | None:
    if raw is None:
        return None
    conv_id = raw.get("id") if isinstance(raw, dict) else raw
    if not isinstance(conv_id, str):
        raise ApiError(
            400, "Invalid 'conversation': expected an id or {\"id\": ...}.", param="conversation"
        )
    return _get_conversation(state, conv_id)


def _pending_calls(items: list[dict[str, Any]]) -> dict[str, str]:
    """Function calls in a history that no function_call_output has answered yet."""
    pending: dict[str, str] = {}
    for item in items:
        if item.get("type") == "function_call":
            pending[item["call_id"]] = item.get("name", "")
        elif item.get("type") == "function_call_output":
            pending.pop(item.get("call_id", ""), None)
    return pending


async def create_response(request: Request) -> Response:
    state = _state(request)
    now = state.now()
    body = await read_json(request)
    _validate(body)
    previous: ResponseRecord | None = None
    if body.get("previous_response_id"):
        previous = state.responses.get(body["previous_response_id"])
        if previous is None or not previous.store:
            raise ApiError(
                400,
                f"Previous response with id '{body['previous_response_id']}' not found.",
                param="previous_response_id",
                code="previous_response_not_found",
            )
        advance(state, previous, now)
        if previous.phase == "work":
            raise ApiError(
                400,
                f"Previous response with id '{previous.id}' is still {previous.status}.",
                param="previous_response_id",
            )
    conv = _conversation_of(state, body.get("conversation"))
    items = _normalize_input(body.get("input"))
    history = _history(previous) if previous else (list(conv.items) if conv else [])

    # Tool outputs must answer exactly the calls still open in the history.
    pending = _pending_calls(history)
    inline_calls = {
        it["call_id"]: it.get("name", "") for it in items if it.get("type") == "function_call"
    }
    results: list[tuple[str, str]] = []
    answered_by: set[str] = set()
    for item in items:
        if item.get("type") != "function_call_output":
            continue
        call_id = item["call_id"]
        name = pending.get(call_id) or inline_calls.get(call_id)
        if name is None and call_id not in pending and call_id not in inline_calls:
            raise ApiError(
                400,
                f"No tool call found for function call output with call_id {call_id}.",
                param="input",
            )
        results.append((name or "", item["output"]))
        owner = state.function_calls.get(call_id)
        if owner is not None:
            answered_by.add(owner[0])
    answered = {it["call_id"] for it in items if it.get("type") == "function_call_output"}
    for call_id in pending:
        if call_id not in answered:
            raise ApiError(400, f"No tool output found for function call {call_id}.", param="input")
    if conv is not None:
        _check_lock(state, conv, now)

    question = _question(items)
    if question is None:
        question = _question(history) or ""
    script = parse_script(question)
    config = state.config
    background = bool(body.get("background"))
    run_time = config.run_time_s if script.run_time_s is None else script.run_time_s
    options = {
        k: body[k]
        for k in (
            "max_output_tokens",
            "max_tool_calls",
            "parallel_tool_calls",
            "reasoning",
            "service_tier",
            "temperature",
            "text",
            "tool_choice",
            "top_p",
            "truncation",
            "user",
        )
        if body.get(k) is not None
    }
    rec = ResponseRecord(
        id=new_id("resp_"),
        created=now,
        model=body["model"],
        background=background,
        store=body.get("store") is not False,
        instructions=body.get("instructions"),
        tools=body.get("tools") or [],
        options=options,
        previous=previous,
        conversation=conv,
        metadata=check_metadata(body),
        input_items=items,
        script=script,
        run_time=run_time,
        queued_until=now + (queued_for(run_time) if background else 0.0),
        work_end=math.inf,
        plan=None,
        status="queued" if background else "in_progress",
    )
    for asker in answered_by:
        state.stats.tool_output_submissions[asker] += 1
    if conv is not None:
        conv.items.extend(items)
        conv.active = rec
    state.responses[rec.id] = rec
    state.stats.responses_created += 1
    state.touch(rec, conv)

    max_tokens = options.get("max_output_tokens")
    if config.engine == "chat":
        rec.chat_messages = chat_engine.items_to_chat(rec.instructions, [*history, *items])
        state.stats.run_created(rec.id, rec.metadata, math.inf, now)
        if background:
            rec.upstream = state.spawn(_upstream_done(state, rec))
            return json_response(rec.to_dict())
        await _upstream_done(state, rec)
        return json_response(rec.to_dict())

    prompt = " ".join([rec.instructions or "", *(_item_text(it) for it in [*history, *items])])
    if results:
        plan = plan_after_tools(script, results, prompt)
    else:
        plan = first_plan(script, prompt, lambda: new_id("call_"))
    if plan.outcome == "never" and not background:
        plan.outcome = "completed"  # [never] needs background mode: a request cannot hang forever
    rec.plan = truncate_plan(plan, max_tokens)
    if rec.plan.outcome != "never" or rec.plan.tool_calls:
        rec.work_end = now + run_time
    state.stats.run_created(rec.id, rec.metadata, rec.predicted_end(), now)
    if background:
        _watch(state, rec)
        return json_response(rec.to_dict())
    await asyncio.sleep(max(0.0, rec.work_end - state.now()))
    advance(state, rec, max(state.now(), rec.work_end))
    return json_response(rec.to_dict())


async def _upstream_done(state: EmulatorState, rec: ResponseRecord) -> None:
    plan = await chat_engine.chat_plan(
        state,
        rec.chat_messages,
        chat_engine.response_tools_to_chat(rec.tools),
        options=rec.options,
        max_tokens=rec.options.get("max_output_tokens"),
    )
    if rec.phase != "work":
        return  # cancelled while the upstream was thinking
    now = state.now()
    rec.plan = plan
    rec.work_end = max(now, rec.queued_until)
    state.stats.tracker.move_end(rec.id, rec.work_end, now)
    advance(state, rec, rec.work_end)
    if (event := _announce(state, rec)) is not None:
        state.webhooks.now(event)
    state.touch(rec)
    if rec.background:
        await state.flush()  # a foreground answer is flushed before it is sent


def resume(state: EmulatorState) -> None:
    """After a restart: ask the upstream again for every background response the restart cut."""
    if state.config.engine != "chat":
        return
    now = state.now()
    for rec in state.responses.values():
        if rec.phase == "work" and rec.plan is None and rec.background:
            state.stats.run_created(rec.id, None, math.inf, now)
            rec.upstream = state.spawn(_upstream_done(state, rec))


async def get_response(request: Request) -> Response:
    state = _state(request)
    rec = _get_response(state, request.path_params["response_id"])
    state.stats.gets_by_run[rec.id] += 1
    advance(state, rec, state.now())
    headers = None
    if state.config.poll_after_ms is not None:
        headers = {"openai-poll-after-ms": str(state.config.poll_after_ms)}
    return json_response(rec.to_dict(), headers=headers)


async def cancel_response(request: Request) -> Response:
    state = _state(request)
    now = state.now()
    rec = _get_response(state, request.path_params["response_id"])
    state.stats.cancel_requests[rec.id] += 1
    if not rec.background:
        raise ApiError(400, "Cannot cancel a synchronous response.", param="response_id")
    advance(state, rec, now)
    if rec.phase == "work":
        rec.phase, rec.status, rec.ended_at = "done", "cancelled", now
        if rec.upstream is not None:
            rec.upstream.cancel()  # closes the upstream connection: the model stops generating
        _release(rec)
        state.touch(rec, rec.conversation)
        state.stats.tracker.move_end(rec.id, now, now)
        if (event := _announce(state, rec)) is not None:
            state.webhooks.now(event)
    return json_response(rec.to_dict())


async def delete_response(request: Request) -> Response:
    state = _state(request)
    rec = _get_response(state, request.path_params["response_id"])
    del state.responses[rec.id]
    state.forget("response", rec.id)
    return json_response({"id": rec.id, "object": "response", "deleted": True})


async def list_input_items(request: Request) -> Response:
    state = _state(request)
    rec = _get_response(state, request.path_params["response_id"])
    return json_response(list_page(rec.input_items, request))


async def create_conversation(request: Request) -> Response:
    _serves_conversations(request)
    state = _state(request)
    body = await read_json(request)
    reject_unknown_parameter(body, CONVERSATION_FIELDS)
    conv = Conversation(
        id=new_id("conv_"),
        created_at=int(state.now()),
        metadata=check_metadata(body),
        items=_normalize_input(body.get("items") or []),
    )
    state.conversations[conv.id] = conv
    state.touch(conv)
    return json_response(conv.to_dict())


async def get_conversation(request: Request) -> Response:
    _serves_conversations(request)
    conv = _get_conversation(_state(request), request.path_params["conversation_id"])
    return json_response(conv.to_dict())


async def list_conversation_items(request: Request) -> Response:
    _serves_conversations(request)
    state = _state(request)
    conv = _get_conversation(state, request.path_params["conversation_id"])
    if conv.active is not None:
        advance(state, conv.active, state.now())
    return json_response(list_page(conv.items, request))


async def add_conversation_items(request: Request) -> Response:
    _serves_conversations(request)
    state = _state(request)
    conv = _get_conversation(state, request.path_params["conversation_id"])
    body = await read_json(request)
    reject_unknown_parameter(body, frozenset({"items"}))
    _check_lock(state, conv, state.now())
    items = _normalize_input(body.get("items") or [])
    conv.items.extend(items)
    state.touch(conv)
    return json_response(
        {
            "object": "list",
            "data": items,
            "first_id": items[0]["id"] if items else None,
            "last_id": items[-1]["id"] if items else None,
            "has_more": False,
        }
    )


RESPONSES_ROUTES = [
    Route("/v1/responses", create_response, methods=["POST"]),
    Route("/v1/responses/{response_id}", get_response, methods=["GET"]),
    Route("/v1/responses/{response_id}", delete_response, methods=["DELETE"]),
    Route("/v1/responses/{response_id}/cancel", cancel_response, methods=["POST"]),
    Route("/v1/responses/{response_id}/input_items", list_input_items, methods=["GET"]),
    Route("/v1/conversations", create_conversation, methods=["POST"]),
    Route("/v1/conversations/{conversation_id}", get_conversation, methods=["GET"]),
    Route("/v1/conversations/{conversation_id}/items", list_conversation_items, methods=["GET"]),
    Route("/v1/conversations/{conversation_id}/items", add_conversation_items, methods=["POST"]),
]
