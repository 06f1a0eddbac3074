"""Assistants v2: assistants, threads, messages and runs, with the real service's rules.

Run progress is lazy: a run stores when its phases end and `advance()` applies whatever the
clock says has happened (status changes, assistant messages, usage) whenever the run or its
thread is touched. Timestamps come from the schedule, not from the moment of the read.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from emulator import chat_engine
from emulator.engine import (
    Plan,
    Script,
    ToolCall,
    first_plan,
    new_id,
    parse_script,
    plan_after_tools,
    truncate_plan,
)
from emulator.state import EmulatorState, queued_for
from emulator.wire import (
    ApiError,
    check_content_length,
    check_metadata,
    check_type,
    json_response,
    list_page,
    not_found,
    read_json,
    reject_unknown,
)

TERMINAL = frozenset({"completed", "failed", "cancelled", "expired", "incomplete"})
DEFAULT_MODEL = "askq-emulator"

ASSISTANT_FIELDS = frozenset(
    {
        "model",
        "name",
        "description",
        "instructions",
        "tools",
        "tool_resources",
        "metadata",
        "temperature",
        "top_p",
        "response_format",
        "reasoning_effort",
    }
)
THREAD_FIELDS = frozenset({"messages", "metadata", "tool_resources"})
MESSAGE_FIELDS = frozenset({"role", "content", "attachments", "metadata"})
_RUN_COMMON = frozenset(
    {
        "assistant_id",
        "model",
        "instructions",
        "tools",
        "metadata",
        "temperature",
        "top_p",
        "max_prompt_tokens",
        "max_completion_tokens",
        "truncation_strategy",
        "tool_choice",
        "parallel_tool_calls",
        "response_format",
        "stream",
    }
)
RUN_FIELDS = _RUN_COMMON | {"additional_instructions", "additional_messages", "reasoning_effort"}
THREAD_AND_RUN_FIELDS = _RUN_COMMON | {"thread", "tool_resources"}
SUBMIT_FIELDS = frozenset({"tool_outputs", "stream"})
TOOL_OUTPUT_FIELDS = frozenset({"tool_call_id", "output"})


# --- records ----------------------------------------------------------------------------


@dataclass(eq=False)
class Assistant:
    id: str
    created_at: int
    model: str
    name: str | None = None
    description: str | None = None
    instructions: str | None = None
    tools: list[dict[str, Any]] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)
    temperature: float | None = None
    top_p: float | None = None
    response_format: Any = "auto"
    tool_resources: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "assistant",
            "created_at": self.created_at,
            "name": self.name,
            "description": self.description,
            "model": self.model,
            "instructions": self.instructions,
            "tools": self.tools,
            "tool_resources": self.tool_resources,
            "metadata": self.metadata,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "response_format": self.response_format,
        }


@dataclass(eq=False)
class Thread:
    id: str
    created_at: int
    metadata: dict[str, str]
    tool_resources: dict[str, Any]
    messages: list[dict[str, Any]] = field(default_factory=list)
    runs: list[Run] = field(default_factory=list)
    active_run: Run | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "thread",
            "created_at": self.created_at,
            "metadata": self.metadata,
            "tool_resources": self.tool_resources,
        }


@dataclass(eq=False)
class Run:
    id: str
    thread: Thread
    assistant_id: str
    created: float
    model: str
    instructions: str
    additional_instructions: str | None
    tools: list[dict[str, Any]]
    metadata: dict[str, str]
    options: dict[str, Any]  # echoed settings: temperature, top_p, tool_choice, ...
    script: Script
    run_time: float
    ra_timeout: float
    queued_until: float
    work_end: float
    plan: Plan | None
    phase: str = "work"  # work | waiting (requires_action) | cancelling | done
    status: str = "queued"
    wait_until: float = math.inf
    cancel_end: float = math.inf
    ended_at: float = math.inf
    started_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    cancelled_at: int | None = None
    required_action: dict[str, Any] | None = None
    last_error: dict[str, Any] | None = None
    incomplete_details: dict[str, Any] | None = None
    pending_calls: list[ToolCall] = field(default_factory=list)
    tool_results: list[tuple[str, str]] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    chat_messages: list[dict[str, Any]] = field(default_factory=list)
    upstream_round: int = 0
    upstream: asyncio.Task[None] | None = None  # the chat engine's call, cancelled with the run

    def predicted_end(self) -> float:
        """When this run turns terminal if nothing else happens (for the active-run count)."""
        if self.phase == "work":
            if self.plan is None or math.isinf(self.work_end):
                return math.inf
            return self.work_end + (self.ra_timeout if self.plan.tool_calls else 0.0)
        if self.phase == "waiting":
            return self.wait_until
        if self.phase == "cancelling":
            return self.cancel_end
        return self.ended_at

    def expires_at(self) -> int | None:
        if self.phase == "done":
            return math.ceil(self.ended_at) if self.status == "expired" else None
        if self.phase == "waiting":
            return math.ceil(self.wait_until)
        base = self.created if math.isinf(self.work_end) else self.work_end
        return math.ceil(base + self.ra_timeout)

    def to_dict(self) -> dict[str, Any]:
        usage = None
        if self.phase == "done":
            usage = {
                "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens,
                "total_tokens": self.prompt_tokens + self.completion_tokens,
            }
        opts = self.options
        return {
            "id": self.id,
            "object": "thread.run",
            "created_at": int(self.created),
            "assistant_id": self.assistant_id,
            "thread_id": self.thread.id,
            "status": self.status,
            "started_at": self.started_at,
            "expires_at": self.expires_at(),
            "cancelled_at": self.cancelled_at,
            "failed_at": self.failed_at,
            "completed_at": self.completed_at,
            "required_action": self.required_action,
            "last_error": self.last_error,
            "model": self.model,
            "instructions": self.instructions,
            "tools": self.tools,
            "metadata": self.metadata,
            "incomplete_details": self.incomplete_details,
            "usage": usage,
            "temperature": opts.get("temperature", 1.0),
            "top_p": opts.get("top_p", 1.0),
            "max_prompt_tokens": opts.get("max_prompt_tokens"),
            "max_completion_tokens": opts.get("max_completion_tokens"),
            "truncation_strategy": opts.get("truncation_strategy")
            or {"type": "auto", "last_messages": None},
            "response_format": opts.get("response_format") or "auto",
            "tool_choice": opts.get("tool_choice") or "auto",
            "parallel_tool_calls": opts.get("parallel_tool_calls", True),
        }


# --- lazy progress ----------------------------------------------------------------------


def _message(
    thread: Thread,
    role: str,
    content: list[dict[str, Any]],
    created: float,
    *,
    run: Run | None = None,
    metadata: dict[str, str] | None = None,
    attachments: list[Any] | None = None,
    status: str = "completed",
) -> dict[str, Any]:
    incomplete = status == "incomplete"
    return {
        "id": new_id("msg_"),
        "object": "thread.message",
        "created_at": int(created),
        "assistant_id": run.assistant_id if run else None,
        "thread_id": thread.id,
        "run_id": run.id if run else None,
        "role": role,
        "content": content,
        "attachments": attachments or [],
        "metadata": metadata or {},
        "status": status,
        "incomplete_details": {"reason": "max_tokens"} if incomplete else None,
        "incomplete_at": int(created) if incomplete else None,
        "completed_at": None if incomplete else int(created),
    }


def _text_content(text: str) -> list[dict[str, Any]]:
    return [{"type": "text", "text": {"value": text, "annotations": []}}]


def message_text(message: dict[str, Any]) -> str:
    return "\n".join(
        part["text"]["value"] for part in message["content"] if part.get("type") == "text"
    )


def _finish(state: EmulatorState, run: Run, status: str, at: float) -> None:
    """Make the run terminal at schedule time `at`, leaving its messages on the thread."""
    run.phase, run.status, run.ended_at = "done", status, at
    run.required_action = None
    stamp = int(at)
    plan = run.plan
    if status == "completed":
        run.completed_at = stamp
    elif status == "failed":
        run.failed_at = stamp
        message = (plan.error_message if plan else None) or "The run failed."
        run.last_error = {"code": plan.error_code if plan else "server_error", "message": message}
    elif status == "cancelled":
        run.cancelled_at = stamp
    elif status == "incomplete":
        run.incomplete_details = {"reason": "max_completion_tokens"}
    if plan is not None and status in ("completed", "incomplete"):
        msg_status = "completed" if status == "completed" else "incomplete"
        for text in plan.answers:
            run.thread.messages.append(
                _message(
                    run.thread, "assistant", _text_content(text), at, run=run, status=msg_status
                )
            )
    if run.thread.active_run is run:
        run.thread.active_run = None
    state.touch(run.thread)


def advance(state: EmulatorState, run: Run, now: float) -> None:
    """Apply every transition the clock has passed since the last look."""
    while True:
        if run.phase == "work":
            if now < run.queued_until:
                run.status = "queued"
                return
            if run.started_at is None:
                run.started_at = int(run.queued_until)
            if now < run.work_end or run.plan is None:
                run.status = "in_progress"
                return
            plan, at = run.plan, run.work_end
            run.prompt_tokens += plan.prompt_tokens
            run.completion_tokens += plan.completion_tokens
            if plan.tool_calls:
                run.phase, run.status = "waiting", "requires_action"
                state.touch(run.thread)
                run.pending_calls = list(plan.tool_calls)
                run.wait_until = at + run.ra_timeout
                run.required_action = {
                    "type": "submit_tool_outputs",
                    "submit_tool_outputs": {
                        "tool_calls": [
                            {
                                "id": c.id,
                                "type": "function",
                                "function": {"name": c.name, "arguments": c.arguments},
                            }
                            for c in plan.tool_calls
                        ]
                    },
                }
                continue
            if plan.outcome == "never":  # pragma: no cover - never plans have no end
                return
            _finish(state, run, plan.outcome, at)
            return
        if run.phase == "waiting":
            if now >= run.wait_until:
                _finish(state, run, "expired", run.wait_until)
            return
        if run.phase == "cancelling":
            if now >= run.cancel_end:
                _finish(state, run, "cancelled", run.cancel_end)
            return
        return


# --- helpers ----------------------------------------------------------------------------


def require_beta(request: Request) -> None:
    """OpenAI refuses Assistants routes without `OpenAI-Beta: assistants=v2`."""
    beta = request.headers.get("openai-beta", "")
    if "assistants=v2" not in beta.replace(" ", ""):
        raise ApiError(
            400,
            "You must provide the 'OpenAI-Beta' header to access the Assistants API. "
            "Please try again by setting the header 'OpenAI-Beta: assistants=v2'.",
            code="invalid_beta",
        )


def _state(request: Request) -> EmulatorState:
    return request.app.state.emulator  # type: ignore[no-any-return]


def _get_thread(state: EmulatorState, thread_id: str) -> Thread:
    thread = state.threads.get(thread_id)
    if thread is None:
        raise not_found("thread", thread_id, "thread_id")
    return thread


def _get_run(state: EmulatorState, thread: Thread, run_id: str) -> Run:
    run = state.runs.get(run_id)
    if run is None or run.thread is not thread:
        raise not_found("run", run_id, "run_id")
    return run


def _settle(state: EmulatorState, thread: Thread, now: float) -> None:
    if thread.active_run is not None:
        advance(state, thread.active_run, now)


def _missing(name: str) -> ApiError:
    return ApiError(
        400, f"Missing required parameter: '{name}'.", param=name, code="missing_required_parameter"
    )


def _check_tools(body: dict[str, Any], name: str = "tools") -> list[dict[str, Any]] | None:
    tools = body.get(name)
    if tools is None:
        return None
    if not isinstance(tools, list):
        raise ApiError(400, f"Invalid type for '{name}': expected an array.", param=name)
    for i, tool in enumerate(tools):
        kind = tool.get("type") if isinstance(tool, dict) else None
        if kind not in ("function", "code_interpreter", "file_search"):
            raise ApiError(
                400,
                f"Invalid value for '{name}[{i}].type': expected one of 'function', "
                "'code_interpreter' or 'file_search'.",
                param=f"{name}[{i}].type",
                code="invalid_value",
            )
        if kind == "function":
            fn = tool.get("function")
            if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
                raise _missing(f"{name}[{i}].function.name")
    return tools


def _parse_message(raw: Any, where: str) -> dict[str, Any]:
    """Validate one message create body; returns role, content blocks, attachments, metadata."""
    if not isinstance(raw, dict):
        raise ApiError(400, f"Invalid type for '{where}': expected an object.", param=where)
    reject_unknown(raw, MESSAGE_FIELDS)
    role = raw.get("role")
    if role is None:
        raise _missing(f"{where}role" if where else "role")
    if role not in ("user", "assistant"):
        raise ApiError(
            400,
            f"Invalid value: '{role}'. Supported values are: 'user' and 'assistant'.",
            param="role",
            code="invalid_value",
        )
    content = raw.get("content")
    if content is None:
        raise _missing("content")
    check_content_length(content)
    blocks: list[dict[str, Any]]
    if isinstance(content, str):
        blocks = _text_content(content)
    elif isinstance(content, list):
        blocks = []
        for part in content:
            if not isinstance(part, dict) or "type" not in part:
                raise ApiError(400, "Invalid content part: expected an object with a 'type'.")
            if part["type"] == "text":
                if not isinstance(part.get("text"), str):
                    raise _missing("content.text")
                blocks.append({"type": "text", "text": {"value": part["text"], "annotations": []}})
            else:
                blocks.append(part)
    else:
        raise ApiError(400, "Invalid type for 'content': expected a string or an array.")
    return {
        "role": role,
        "content": blocks,
        "attachments": raw.get("attachments") or [],
        "metadata": check_metadata(raw),
    }


def _append_parsed(thread: Thread, parsed: dict[str, Any], now: float) -> dict[str, Any]:
    """Add a message checked by `_parse_message` to the thread; returns it."""
    message = _message(
        thread,
        parsed["role"],
        parsed["content"],
        now,
        metadata=parsed["metadata"],
        attachments=parsed["attachments"],
    )
    thread.messages.append(message)
    return message


def _busy_messages(state: EmulatorState, thread: Thread) -> ApiError:
    state.stats.thread_busy_rejections += 1
    assert thread.active_run is not None
    return ApiError(
        400,
        f"Can't add messages to {thread.id} while a run {thread.active_run.id} is active.",
    )


def _busy_runs(state: EmulatorState, thread: Thread) -> ApiError:
    state.stats.thread_busy_rejections += 1
    assert thread.active_run is not None
    return ApiError(400, f"Thread {thread.id} already has an active run {thread.active_run.id}.")


def _new_thread(state: EmulatorState, body: dict[str, Any], now: float) -> Thread:
    messages = body.get("messages") or []
    if not isinstance(messages, list):
        raise ApiError(400, "Invalid type for 'messages': expected an array.", param="messages")
    parsed = [_parse_message(m, "") for m in messages]
    thread = Thread(
        id=new_id("thread_"),
        created_at=int(now),
        metadata=check_metadata(body),
        tool_resources=body.get("tool_resources") or {},
    )
    for m in parsed:
        _append_parsed(thread, m, now)
    state.threads[thread.id] = thread
    state.touch(thread)
    return thread


def _validate_run_body(body: dict[str, Any], allowed: frozenset[str]) -> None:
    reject_unknown(body, allowed)
    if not body.get("assistant_id"):
        raise _missing("assistant_id")
    check_type(body, "assistant_id", (str,), nullable=False)
    if body.get("stream"):
        raise ApiError(
            400,
            "The askq emulator does not stream; omit 'stream' or set it to false.",
            param="stream",
        )
    for name in ("model", "instructions", "additional_instructions"):
        check_type(body, name, (str,))
    for name in ("temperature", "top_p"):
        check_type(body, name, (int, float))
    for name in ("max_prompt_tokens", "max_completion_tokens"):
        check_type(body, name, (int,))
    check_type(body, "parallel_tool_calls", (bool,), nullable=False)
    check_type(body, "truncation_strategy", (dict,))
    check_type(body, "additional_messages", (list,))
    check_metadata(body)
    _check_tools(body)


def _create_run(state: EmulatorState, thread: Thread, body: dict[str, Any], now: float) -> Run:
    """Create a run on an idle thread (body already validated)."""
    for raw in body.get("additional_messages") or []:
        _append_parsed(thread, _parse_message(raw, "additional_messages."), now)
    assistant_id = body["assistant_id"]
    # Any assistant id is accepted (askq's default setup names none it created); a known one
    # lends its model, instructions and tools.
    assistant = state.assistants.get(assistant_id)
    tools = body.get("tools")
    if tools is None:
        tools = assistant.tools if assistant else []
    instructions = body.get("instructions")
    if instructions is None:
        instructions = (assistant.instructions if assistant else None) or ""
    model = body.get("model") or (assistant.model if assistant else DEFAULT_MODEL)
    question = next((message_text(m) for m in reversed(thread.messages) if m["role"] == "user"), "")
    script = parse_script(question)
    config = state.config
    run_time = config.run_time_s if script.run_time_s is None else script.run_time_s
    options = {
        k: body[k]
        for k in (
            "temperature",
            "top_p",
            "max_prompt_tokens",
            "max_completion_tokens",
            "truncation_strategy",
            "tool_choice",
            "parallel_tool_calls",
            "response_format",
            "reasoning_effort",
        )
        if body.get(k) is not None
    }
    run = Run(
        id=new_id("run_"),
        thread=thread,
        assistant_id=assistant_id,
        created=now,
        model=model,
        instructions=instructions,
        additional_instructions=body.get("additional_instructions"),
        tools=tools,
        metadata=check_metadata(body),
        options=options,
        script=script,
        run_time=run_time,
        ra_timeout=config.requires_action_timeout_s,
        queued_until=now + queued_for(run_time),
        work_end=math.inf,
        plan=None,
    )
    if config.engine == "chat":
        run.chat_messages = chat_engine.thread_to_chat(
            run.instructions, run.additional_instructions, thread.messages, message_text
        )
        _ask_upstream(state, run)
    else:
        prompt = " ".join([instructions, *(message_text(m) for m in thread.messages)])
        plan = first_plan(script, prompt, lambda: new_id("call_"))
        run.plan = truncate_plan(plan, options.get("max_completion_tokens"))
        if script.outcome != "never" or plan.tool_calls:
            run.work_end = now + run_time
    thread.runs.append(run)
    thread.active_run = run
    state.runs[run.id] = run
    state.touch(thread)
    state.stats.runs_created += 1
    state.stats.run_created(run.id, run.metadata, run.predicted_end(), now)
    return run


def _ask_upstream(state: EmulatorState, run: Run) -> None:
    """Chat engine: the run stays in_progress until the upstream model answers."""
    run.upstream_round += 1
    round_no = run.upstream_round

    async def call() -> None:
        plan = await chat_engine.chat_plan(
            state,
            run.chat_messages,
            chat_engine.assistant_tools_to_chat(run.tools),
            options=run.options,
            max_tokens=run.options.get("max_completion_tokens"),
        )
        if run.phase != "work" or run.upstream_round != round_no:
            return  # cancelled meanwhile: the answer is dropped, as a real service would
        now = state.now()
        run.plan = plan
        run.work_end = max(now, run.queued_until)
        if plan.tool_calls:
            run.chat_messages.append(chat_engine.assistant_tool_call_message(plan.tool_calls))
        state.stats.tracker.move_end(run.id, run.predicted_end(), now)
        state.touch(run.thread)
        await state.flush()

    run.upstream = state.spawn(call())


def resume(state: EmulatorState) -> None:
    """After a restart: ask the upstream again for every run whose call the restart cut."""
    if state.config.engine != "chat":
        return
    now = state.now()
    for run in state.runs.values():
        if run.phase == "work" and run.plan is None:
            state.stats.run_created(run.id, None, math.inf, now)
            _ask_upstream(state, run)


def _run_response(state: EmulatorState, run: Run, request: Request | None = None) -> Response:
    headers = None
    if request is not None and state.config.poll_after_ms is not None:
        headers = {"openai-poll-after-ms": str(state.config.poll_after_ms)}
    return json_response(run.to_dict(), headers=headers)


# --- handlers ---------------------------------------------------------------------------


async def create_assistant(request: Request) -> Response:
    require_beta(request)
    state = _state(request)
    body = await read_json(request)
    reject_unknown(body, ASSISTANT_FIELDS)
    if not body.get("model"):
        raise _missing("model")
    check_metadata(body)
    assistant = Assistant(
        id=new_id("asst_"),
        created_at=int(state.now()),
        model=body["model"],
        name=body.get("name"),
        description=body.get("description"),
        instructions=body.get("instructions"),
        tools=_check_tools(body) or [],
        metadata=check_metadata(body),
        temperature=body.get("temperature"),
        top_p=body.get("top_p"),
        response_format=body.get("response_format") or "auto",
        tool_resources=body.get("tool_resources") or {},
    )
    state.assistants[assistant.id] = assistant
    state.touch(assistant)
    return json_response(assistant.to_dict())


async def list_assistants(request: Request) -> Response:
    require_beta(request)
    items = [a.to_dict() for a in _state(request).assistants.values()]
    return json_response(list_page(items, request))


async def get_assistant(request: Request) -> Response:
    require_beta(request)
    assistant_id = request.path_params["assistant_id"]
    assistant = _state(request).assistants.get(assistant_id)
    if assistant is None:
        raise not_found("assistant", assistant_id, "assistant_id")
    return json_response(assistant.to_dict())


async def create_thread(request: Request) -> Response:
    require_beta(request)
    state = _state(request)
    body = await read_json(request)
    reject_unknown(body, THREAD_FIELDS)
    thread = _new_thread(state, body, state.now())
    return json_response(thread.to_dict())


async def get_thread(request: Request) -> Response:
    require_beta(request)
    thread = _get_thread(_state(request), request.path_params["thread_id"])
    return json_response(thread.to_dict())


async def modify_thread(request: Request) -> Response:
    require_beta(request)
    state = _state(request)
    thread = _get_thread(state, request.path_params["thread_id"])
    body = await read_json(request)
    reject_unknown(body, frozenset({"metadata", "tool_resources"}))
    if "metadata" in body:
        thread.metadata = check_metadata(body)
    state.touch(thread)
    return json_response(thread.to_dict())


async def delete_thread(request: Request) -> Response:
    require_beta(request)
    state = _state(request)
    thread = _get_thread(state, request.path_params["thread_id"])
    del state.threads[thread.id]
    state.forget("thread", thread.id)
    return json_response({"id": thread.id, "object": "thread.deleted", "deleted": True})


async def create_message(request: Request) -> Response:
    require_beta(request)
    state = _state(request)
    now = state.now()
    thread = _get_thread(state, request.path_params["thread_id"])
    body = await read_json(request)
    parsed = _parse_message(body, "")
    _settle(state, thread, now)
    if thread.active_run is not None:
        raise _busy_messages(state, thread)
    state.touch(thread)
    return json_response(_append_parsed(thread, parsed, now))


async def list_messages(request: Request) -> Response:
    require_beta(request)
    state = _state(request)
    thread = _get_thread(state, request.path_params["thread_id"])
    _settle(state, thread, state.now())
    run_id = request.query_params.get("run_id")
    keep = (lambda m: m["run_id"] == run_id) if run_id else None
    page = list_page(thread.messages, request, keep=keep)
    run = next((r for r in thread.runs if r.id == run_id), None)
    if run is not None and run.plan is not None and run.plan.endless_pages:
        # [endless_pages]: a server whose cursor never ends (the same page again and again)
        params = [(k, v) for k, v in request.query_params.multi_items() if k != "after"]
        first = Request({**request.scope, "query_string": urlencode(params).encode()})
        page = {**list_page(thread.messages, first, keep=keep), "has_more": True}
    return json_response(page)


async def get_message(request: Request) -> Response:
    require_beta(request)
    state = _state(request)
    thread = _get_thread(state, request.path_params["thread_id"])
    _settle(state, thread, state.now())
    message_id = request.path_params["message_id"]
    for message in thread.messages:
        if message["id"] == message_id:
            return json_response(message)
    raise not_found("message", message_id, "message_id")


async def create_run(request: Request) -> Response:
    require_beta(request)
    state = _state(request)
    now = state.now()
    thread = _get_thread(state, request.path_params["thread_id"])
    body = await read_json(request)
    _validate_run_body(body, RUN_FIELDS)
    _settle(state, thread, now)
    if thread.active_run is not None:
        raise _busy_runs(state, thread)
    run = _create_run(state, thread, body, now)
    return _run_response(state, run)


async def create_thread_and_run(request: Request) -> Response:
    require_beta(request)
    state = _state(request)
    now = state.now()
    body = await read_json(request)
    _validate_run_body(body, THREAD_AND_RUN_FIELDS)
    thread_body = body.get("thread") or {}
    if not isinstance(thread_body, dict):
        raise ApiError(400, "Invalid type for 'thread': expected an object.", param="thread")
    reject_unknown(thread_body, THREAD_FIELDS)
    thread = _new_thread(state, thread_body, now)
    if body.get("tool_resources"):
        thread.tool_resources = body["tool_resources"]
    run = _create_run(state, thread, body, now)
    return _run_response(state, run)


async def list_runs(request: Request) -> Response:
    require_beta(request)
    state = _state(request)
    thread = _get_thread(state, request.path_params["thread_id"])
    _settle(state, thread, state.now())
    return json_response(list_page([r.to_dict() for r in thread.runs], request))


async def get_run(request: Request) -> Response:
    require_beta(request)
    state = _state(request)
    thread = _get_thread(state, request.path_params["thread_id"])
    run = _get_run(state, thread, request.path_params["run_id"])
    state.stats.gets_by_run[run.id] += 1
    advance(state, run, state.now())
    return _run_response(state, run, request)


async def submit_tool_outputs(request: Request) -> Response:
    require_beta(request)
    state = _state(request)
    now = state.now()
    thread = _get_thread(state, request.path_params["thread_id"])
    run = _get_run(state, thread, request.path_params["run_id"])
    state.stats.tool_output_submissions[run.id] += 1
    body = await read_json(request)
    reject_unknown(body, SUBMIT_FIELDS)
    if body.get("stream"):
        raise ApiError(400, "The askq emulator does not stream.", param="stream")
    outputs = body.get("tool_outputs")
    if outputs is None:
        raise _missing("tool_outputs")
    if not isinstance(outputs, list):
        raise ApiError(
            400, "Invalid type for 'tool_outputs': expected an array.", param="tool_outputs"
        )
    advance(state, run, now)
    if run.status != "requires_action":
        raise ApiError(400, f'Runs in status "{run.status}" do not accept tool outputs.')
    names = {c.id: c.name for c in run.pending_calls}
    given: dict[str, str] = {}
    for i, item in enumerate(outputs):
        if not isinstance(item, dict):
            raise ApiError(400, f"Invalid type for 'tool_outputs[{i}]': expected an object.")
        reject_unknown(item, TOOL_OUTPUT_FIELDS)
        call_id = item.get("tool_call_id")
        if not isinstance(call_id, str):
            raise _missing(f"tool_outputs[{i}].tool_call_id")
        output = item.get("output", "")
        if not isinstance(output, str):
            raise ApiError(
                400,
                f"Invalid type for 'tool_outputs[{i}].output': expected a string.",
                param=f"tool_outputs[{i}].output",
                code="invalid_type",
            )
        if call_id not in names:
            raise ApiError(
                400,
                f"Invalid tool_call_id: '{call_id}' is not a tool call of this run's "
                "required action.",
                param=f"tool_outputs[{i}].tool_call_id",
            )
        if call_id in given:
            raise ApiError(
                400,
                f"Duplicate tool_call_id: '{call_id}' was given more than one output.",
                param=f"tool_outputs[{i}].tool_call_id",
            )
        given[call_id] = output
    if len(given) != len(names):
        expected = [c.id for c in run.pending_calls]
        raise ApiError(400, f"Expected tool outputs for call_ids {expected}, got {list(given)}.")
    results = [(c.name, given[c.id]) for c in run.pending_calls]
    run.tool_results.extend(results)
    run.phase, run.status = "work", "queued"
    run.required_action = None
    run.wait_until = math.inf
    run.queued_until = now + queued_for(run.run_time)
    if state.config.engine == "chat":
        run.chat_messages.extend(
            chat_engine.tool_result_message(c.id, given[c.id]) for c in run.pending_calls
        )
        run.plan, run.work_end = None, math.inf
        run.pending_calls = []
        _ask_upstream(state, run)
    else:
        run.pending_calls = []
        prompt = " ".join(output for _, output in results)
        plan = plan_after_tools(run.script, results, prompt)
        run.plan = truncate_plan(plan, run.options.get("max_completion_tokens"))
        run.work_end = math.inf if plan.outcome == "never" else now + run.run_time
    state.stats.tracker.move_end(run.id, run.predicted_end(), now)
    state.touch(thread)
    return _run_response(state, run)


async def cancel_run(request: Request) -> Response:
    require_beta(request)
    state = _state(request)
    now = state.now()
    thread = _get_thread(state, request.path_params["thread_id"])
    run = _get_run(state, thread, request.path_params["run_id"])
    state.stats.cancel_requests[run.id] += 1
    advance(state, run, now)
    if run.phase in ("done", "cancelling"):
        raise ApiError(400, f"Cannot cancel run with status '{run.status}'.")
    run.phase, run.status = "cancelling", "cancelling"
    if run.upstream is not None:
        run.upstream.cancel()  # closes the upstream connection: the model stops generating
    run.required_action = None
    run.pending_calls = []
    run.cancel_end = now + state.config.cancel_time_s
    state.stats.tracker.move_end(run.id, run.cancel_end, now)
    state.touch(thread)
    return _run_response(state, run)


BETA_ROUTES = [
    Route("/v1/assistants", create_assistant, methods=["POST"]),
    Route("/v1/assistants", list_assistants, methods=["GET"]),
    Route("/v1/assistants/{assistant_id}", get_assistant, methods=["GET"]),
    Route("/v1/threads/runs", create_thread_and_run, methods=["POST"]),
    Route("/v1/threads", create_thread, methods=["POST"]),
    Route("/v1/threads/{thread_id}", get_thread, methods=["GET"]),
    Route("/v1/threads/{thread_id}", modify_thread, methods=["POST"]),
    Route("/v1/threads/{thread_id}", delete_thread, methods=["DELETE"]),
    Route("/v1/threads/{thread_id}/messages", create_message, methods=["POST"]),
    Route("/v1/threads/{thread_id}/messages", list_messages, methods=["GET"]),
    Route("/v1/threads/{thread_id}/messages/{message_id}", get_message, methods=["GET"]),
    Route("/v1/threads/{thread_id}/runs", create_run, methods=["POST"]),
    Route("/v1/threads/{thread_id}/runs", list_runs, methods=["GET"]),
    Route("/v1/threads/{thread_id}/runs/{run_id}", get_run, methods=["GET"]),
    Route(
        "/v1/threads/{thread_id}/runs/{run_id}/submit_tool_outputs",
        submit_tool_outputs,
        methods=["POST"],
    ),
    Route("/v1/threads/{thread_id}/runs/{run_id}/cancel", cancel_run, methods=["POST"]),
]
