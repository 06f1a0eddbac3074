"""Agents API routes (beta, `OpenAI-Beta: agents=v1`): saved agents, sessions, input events,
turns and items, with paths and shapes from the official SDK (`openai/resources/beta/agents/`).

`Idempotency-Key` is honoured on session creation and on input events: a repeated key with the
same request replays the first answer (header `Idempotent-Replayed: true`) without acting
again; the same key with another request is a 400. The SDK sends the key on events
(`events.create(idempotency_key=...)`); askq sends it on creation too.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from emulator.agent_sessions import (
    ENDED,
    Session,
    Turn,
    advance,
    agent_config,
    announce,
    finish,
    message_item,
    new_turn,
    resume,
    settle,
    watch,
)
from emulator.engine import first_plan, new_id, parse_script, plan_after_tools
from emulator.state import EmulatorState
from emulator.wire import (
    ApiError,
    check_metadata,
    check_type,
    json_response,
    list_page,
    not_found,
    read_json,
    reject_unknown_parameter,
)

DEFAULT_MODEL = "askq-emulator"
AGENT_FIELDS = frozenset(
    {
        "model",
        "name",
        "instructions",
        "tools",
        "metadata",
        "compaction",
        "experimental",
        "multi_agent",
        "reasoning",
        "service_tier",
        "text",
    }
)
SESSION_FIELDS = frozenset(
    {
        "environment",
        "agent",
        "agent_id",
        "input",
        "metadata",
        "prompt_cache_options",
        "review",
        "stream",
        "stream_options",
        "vault_ids",
    }
)
INPUT_EVENTS = frozenset(
    {
        "agent.session.input.message",
        "agent.session.input.cancel",
        "agent.session.input.tool_result",
    }
)


def _state(request: Request) -> EmulatorState:
    return request.app.state.emulator  # type: ignore[no-any-return]


def require_beta(request: Request) -> None:
    """The SDK sends `OpenAI-Beta: agents=v1` on every Agents route."""
    if "agents=v1" not in request.headers.get("openai-beta", "").replace(" ", ""):
        raise ApiError(
            400,
            "You must provide the 'OpenAI-Beta' header to access the Agents API. Please try "
            "again by setting the header 'OpenAI-Beta: agents=v1'.",
            code="invalid_beta",
        )


async def _idempotent(request: Request, handle: Callable[[], Awaitable[Response]]) -> Response:
    """Run `handle` once per Idempotency-Key; replay its success for a repeated key."""
    key = request.headers.get("idempotency-key")
    if not key:
        return await handle()
    state = _state(request)
    fingerprint = hashlib.sha256(
        f"{request.method} {request.url.path}\n".encode() + await request.body()
    ).hexdigest()
    stored = state.idempotency.get(key)
    if stored is not None:
        if stored[0] != fingerprint:
            raise ApiError(
                400,
                f"Idempotency-Key '{key}' was already used with a different request.",
                param="Idempotency-Key",
                code="idempotency_key_reused",
            )
        state.stats.idempotent_replays += 1
        return Response(
            stored[2],
            status_code=stored[1],
            media_type="application/json" if stored[2] else None,
            headers={"Idempotent-Replayed": "true"},
        )
    # only successes are kept: a refusal (busy session, bad input) may go through later
    response = await handle()
    if response.status_code < 300:
        state.idempotency[key] = (fingerprint, response.status_code, bytes(response.body))
    return response


def _texts(messages: Any, where: str) -> list[str]:
    """User message texts of an `input` (a string, or `AgentSessionInputMessageParam`s)."""
    if isinstance(messages, str):
        if not messages:
            raise ApiError(400, f"Invalid '{where}': empty string.", param=where)
        return [messages]
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, f"Invalid '{where}': expected a non-empty array.", param=where)
    texts = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") != "user":
            raise ApiError(
                400,
                f"Invalid value for '{where}[{i}].role': expected 'user'.",
                param=f"{where}[{i}].role",
                code="invalid_value",
            )
        content = message.get("content")
        if not isinstance(content, list):
            raise ApiError(400, f"Missing required parameter: '{where}[{i}].content'.")
        texts.append(
            "\n".join(
                part.get("text", "")
                for part in content
                if isinstance(part, dict) and part.get("type") == "input_text"
            )
        )
    return texts


def _start_turn(
    state: EmulatorState,
    session: Session,
    texts: list[str],
    now: float,
    metadata: dict[str, str] | None,
) -> Turn:
    if state.config.engine != "scripted":
        raise ApiError(400, "The askq emulator serves Agents sessions with its scripted engine.")
    script = parse_script(texts[-1])
    history = " ".join(
        part["text"]
        for item in session.items
        if item["type"] == "message"
        for part in item["content"]
    )
    prompt = " ".join([session.agent.get("instructions") or "", history, *texts])
    plan = first_plan(script, prompt, lambda: new_id("call_"))
    turn = new_turn(state, session, script, plan, now, metadata)
    session.items.extend(message_item(turn, "user", text) for text in texts)
    watch(state, turn)
    return turn


def _get_session(state: EmulatorState, session_id: str) -> Session:
    session = state.sessions.get(session_id)
    if session is None:
        raise not_found("session", session_id, "session_id")
    return session


def _get_turn(state: EmulatorState, session: Session, turn_id: str) -> Turn:
    for turn in session.turns:
        if turn.id == turn_id:
            return turn
    raise not_found("turn", turn_id, "turn_id")


def _agent_for(state: EmulatorState, body: dict[str, Any]) -> dict[str, Any]:
    overrides = body.get("agent") or {}
    if not isinstance(overrides, dict):
        raise ApiError(400, "Invalid type for 'agent': expected an object.", param="agent")
    reject_unknown_parameter(overrides, AGENT_FIELDS - {"metadata"})
    agent_id = body.get("agent_id")
    check_type(body, "agent_id", (str,))
    if not agent_id and not overrides.get("model"):
        raise ApiError(
            400,
            "Missing required parameter: 'agent.model' (required without 'agent_id').",
            param="agent.model",
            code="missing_required_parameter",
        )
    saved = state.agents.get(agent_id) if agent_id else None
    base = dict(saved or {})
    merged = {**base, **{k: v for k, v in overrides.items() if v is not None}}
    model = merged.get("model") or DEFAULT_MODEL
    return agent_config(agent_id or new_id("agent_"), model, merged)


# --- handlers ---------------------------------------------------------------------------


async def create_agent(request: Request) -> Response:
    require_beta(request)
    state = _state(request)
    body = await read_json(request)
    reject_unknown_parameter(body, AGENT_FIELDS)
    if not body.get("model"):
        raise ApiError(400, "Missing required parameter: 'model'.", param="model")
    now = int(state.now())
    agent = agent_config(new_id("agent_"), body["model"], body)
    record = {**agent, "object": "agent", "created_at": now, "updated_at": now}
    record["metadata"] = check_metadata(body)
    state.agents[agent["id"]] = record
    return json_response(record)


async def get_agent(request: Request) -> Response:
    require_beta(request)
    agent_id = request.path_params["agent_id"]
    agent = _state(request).agents.get(agent_id)
    if agent is None:
        raise not_found("agent", agent_id, "agent_id")
    return json_response(agent)


async def create_session(request: Request) -> Response:
    require_beta(request)

    async def handle() -> Response:
        state = _state(request)
        now = state.now()
        body = await read_json(request)
        reject_unknown_parameter(body, SESSION_FIELDS)
        environment = body.get("environment")
        if not isinstance(environment, dict) or "type" not in environment:
            raise ApiError(
                400,
                "Missing required parameter: 'environment'.",
                param="environment",
                code="missing_required_parameter",
            )
        if environment["type"] != "none":
            raise ApiError(
                400,
                "The askq emulator runs sessions without an execution environment only "
                "(environment type 'none').",
                param="environment.type",
                code="invalid_value",
            )
        if body.get("stream"):
            raise ApiError(400, "The askq emulator does not stream; omit 'stream'.")
        if body.get("input") is None:
            raise ApiError(
                400,
                "Missing required parameter: 'input' (required when environment.type is 'none').",
                param="input",
                code="missing_required_parameter",
            )
        texts = _texts(body["input"], "input")
        metadata = check_metadata(body)
        session = Session(
            id=new_id("sess_"),
            created_at=int(now),
            agent=_agent_for(state, body),
            metadata=metadata,
            last_active_at=now,
        )
        state.sessions[session.id] = session
        _start_turn(state, session, texts, now, metadata)
        return json_response(session.to_dict())

    return await _idempotent(request, handle)


async def list_sessions(request: Request) -> Response:
    require_beta(request)
    state = _state(request)
    params = request.query_params
    agent_id = params.get("agent_id")
    wanted = {
        key[len("metadata[") : -1]: value
        for key, value in params.multi_items()
        if key.startswith("metadata[") and key.endswith("]")
    }

    def keep(item: dict[str, Any]) -> bool:
        if agent_id and item["agent"]["id"] != agent_id:
            return False
        return all(item["metadata"].get(k) == v for k, v in wanted.items())

    now = state.now()
    for session in state.sessions.values():
        settle(state, session, now)
    items = [s.to_dict() for s in state.sessions.values()]
    return json_response(list_page(items, request, keep=keep))


async def get_session(request: Request) -> Response:
    require_beta(request)
    state = _state(request)
    session = _get_session(state, request.path_params["session_id"])
    settle(state, session, state.now())
    return json_response(session.to_dict())


async def update_session(request: Request) -> Response:
    require_beta(request)
    state = _state(request)
    session = _get_session(state, request.path_params["session_id"])
    body = await read_json(request)
    reject_unknown_parameter(
        body, frozenset({"agent", "metadata", "prompt_cache_options", "review"})
    )
    if "metadata" in body:
        session.metadata = check_metadata(body)
    settle(state, session, state.now())
    return json_response(session.to_dict())


async def delete_session(request: Request) -> Response:
    require_beta(request)
    state = _state(request)
    session = _get_session(state, request.path_params["session_id"])
    settle(state, session, state.now())
    active = session.active
    if active is not None and active.phase == "work":
        raise ApiError(400, "Running execution must be cancelled first.", param="session_id")
    del state.sessions[session.id]
    return json_response({"id": session.id, "object": "agent.session.deleted", "deleted": True})


def _busy(state: EmulatorState, session: Session) -> ApiError:
    state.stats.thread_busy_rejections += 1
    return ApiError(
        400,
        f"The session {session.id} cannot accept additional input while a turn is running.",
        code="active_turn_not_steerable",
    )


def _output_text(event: dict[str, Any]) -> str:
    if not event.get("success"):
        return str(event.get("error") or "The function call failed.")
    output = event.get("output")
    if isinstance(output, list):
        return "\n".join(p.get("text", "") for p in output if isinstance(p, dict))
    return "" if output is None else str(output)


def _tool_results(
    state: EmulatorState, session: Session, events: list[dict[str, Any]], now: float
) -> None:
    active = session.active
    given: dict[str, str] = {}
    for event in events:
        call_id = event.get("call_id")
        pending = {c.id for c in active.pending_calls} if active else set()
        if (
            active is None
            or active.phase != "waiting"
            or event.get("turn_id") != active.id
            or call_id not in pending
            or call_id in given
        ):
            raise ApiError(
                400, f"Unknown pending tool call: {call_id}", code="invalid_request_error"
            )
        given[str(call_id)] = _output_text(event)
    assert active is not None
    state.stats.tool_output_submissions[active.id] += 1
    for call_id, output in given.items():
        session.items.append(
            {
                "id": new_id("fco_"),
                "type": "function_call_output",
                "call_id": call_id,
                "output": output,
                "error": None,
                "status": "completed",
                "turn_id": active.id,
            }
        )
    active.tool_results.extend(
        (call.name, given[call.id]) for call in active.pending_calls if call.id in given
    )
    active.pending_calls = [c for c in active.pending_calls if c.id not in given]
    if not active.pending_calls:
        prompt = " ".join(output for _, output in active.tool_results)
        resume(state, active, plan_after_tools(active.script, active.tool_results, prompt), now)
        watch(state, active)


async def create_events(request: Request) -> Response:
    require_beta(request)

    async def handle() -> Response:
        state = _state(request)
        now = state.now()
        session = _get_session(state, request.path_params["session_id"])
        body = await read_json(request)
        reject_unknown_parameter(body, frozenset({"events"}))
        events = body.get("events")
        if not isinstance(events, list) or not events:
            raise ApiError(400, "Missing required parameter: 'events'.", param="events")
        for i, event in enumerate(events):
            kind = event.get("type") if isinstance(event, dict) else None
            if kind not in INPUT_EVENTS:
                raise ApiError(
                    400,
                    f"Invalid value for 'events[{i}].type': the askq emulator takes "
                    f"{', '.join(sorted(INPUT_EVENTS))}.",
                    param=f"events[{i}].type",
                    code="invalid_value",
                )
        settle(state, session, now)
        results = [e for e in events if e["type"] == "agent.session.input.tool_result"]
        if results:
            _tool_results(state, session, results, now)
        for event in events:
            if event["type"] == "agent.session.input.message":
                if session.active is not None:
                    raise _busy(state, session)
                _start_turn(state, session, _texts(event.get("input"), "input"), now, None)
            elif event["type"] == "agent.session.input.cancel":
                active = session.active
                if active is None:
                    raise ApiError(400, f"The session {session.id} has no active turn to cancel.")
                state.stats.cancel_requests[active.id] += 1
                finish(state, active, "cancelled", now)
                if (event := announce(state, active)) is not None:
                    state.webhooks.now(event)
        return Response(status_code=202)

    return await _idempotent(request, handle)


async def list_turns(request: Request) -> Response:
    require_beta(request)
    state = _state(request)
    session = _get_session(state, request.path_params["session_id"])
    settle(state, session, state.now())
    return json_response(list_page([t.to_dict() for t in session.turns], request))


async def get_turn(request: Request) -> Response:
    require_beta(request)
    state = _state(request)
    session = _get_session(state, request.path_params["session_id"])
    turn = _get_turn(state, session, request.path_params["turn_id"])
    state.stats.gets_by_run[turn.id] += 1
    advance(state, turn, state.now())
    headers = None
    if state.config.poll_after_ms is not None and turn.status not in ENDED:
        headers = {"openai-poll-after-ms": str(state.config.poll_after_ms)}
    return json_response(turn.to_dict(), headers=headers)


async def list_turn_items(request: Request) -> Response:
    require_beta(request)
    state = _state(request)
    session = _get_session(state, request.path_params["session_id"])
    turn = _get_turn(state, session, request.path_params["turn_id"])
    advance(state, turn, state.now())
    items = [item for item in session.items if item["turn_id"] == turn.id]
    return json_response(list_page(items, request))


async def list_session_items(request: Request) -> Response:
    require_beta(request)
    state = _state(request)
    session = _get_session(state, request.path_params["session_id"])
    settle(state, session, state.now())
    return json_response(list_page(session.items, request))


AGENTS_ROUTES = [
    Route("/v1/agents", create_agent, methods=["POST"]),
    Route("/v1/agents/sessions", create_session, methods=["POST"]),
    Route("/v1/agents/sessions", list_sessions, methods=["GET"]),
    Route("/v1/agents/sessions/{session_id}", get_session, methods=["GET"]),
    Route("/v1/agents/sessions/{session_id}", update_session, methods=["POST"]),
    Route("/v1/agents/sessions/{session_id}", delete_session, methods=["DELETE"]),
    Route("/v1/agents/sessions/{session_id}/events", create_events, methods=["POST"]),
    Route("/v1/agents/sessions/{session_id}/items", list_session_items, methods=["GET"]),
    Route("/v1/agents/sessions/{session_id}/turns", list_turns, methods=["GET"]),
    Route("/v1/agents/sessions/{session_id}/turns/{turn_id}", get_turn, methods=["GET"]),
    Route(
        "/v1/agents/sessions/{session_id}/turns/{turn_id}/items",
        list_turn_items,
        methods=["GET"],
    ),
    Route("/v1/agents/{agent_id}", get_agent, methods=["GET"]),
]
