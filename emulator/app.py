"""The Starlette application: API routes, control routes, and the stats/fault layer for /v1."""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from fnmatch import fnmatch
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlsplit, urlunsplit

from pydantic import ValidationError
from redis.exceptions import RedisError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from emulator import assistants, responses
from emulator.agents import AGENTS_ROUTES
from emulator.assistants import BETA_ROUTES
from emulator.chat import CHAT_ROUTES
from emulator.config import EmulatorConfig
from emulator.responses import RESPONSES_ROUTES
from emulator.state import EmulatorState
from emulator.wire import ApiError, error_response, json_response, read_json

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


async def _abort_connection(receive: Receive) -> None:
    """Close the TCP connection with no answer at all, like a crashed server or proxy.

    ASGI has no verb for this; uvicorn's protocol object (the receive callable's owner) holds
    the transport, so it is aborted directly. Waiting a few loop turns lets uvicorn see the
    disconnect, so it does not try to send its own 500 afterwards.
    """
    transport = getattr(getattr(receive, "__self__", None), "transport", None)
    if transport is None:
        raise RuntimeError("emulated connection drop")  # another server: it answers 500
    transport.abort()
    for _ in range(5):
        await asyncio.sleep(0)


class ApiLayer:
    """Counts every /v1 request by route template and status, and injects faults.

    Pure ASGI (not BaseHTTPMiddleware) so it can drop connections and stays cheap.
    """

    def __init__(self, app: ASGIApp, state: EmulatorState, routes: list[BaseRoute]) -> None:
        self.app = app
        self.state = state
        self.templates: list[tuple[re.Pattern[str], set[str], str]] = [
            (r.path_regex, set(r.methods or ()), r.path) for r in routes if isinstance(r, Route)
        ]

    def template(self, method: str, path: str) -> str:
        fallback = None
        for regex, methods, template in self.templates:
            if regex.match(path):
                if method in methods:
                    return template
                fallback = fallback or template
        return fallback or path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        state = self.state
        stats = state.stats
        method = scope["method"]
        template = self.template(method, scope["path"])
        key = f"{method} {template}"
        stats.requests[key] += 1
        stats.request_times.append(time.time())

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                stats.status_codes[str(message["status"])] += 1
                # what this request changed is saved before the client hears of it
                await state.flush()
            await send(message)

        config = state.config
        refusal = _azure_refusal(config, scope)
        if refusal is not None:
            await refusal(scope, receive, counting_send)
            return
        faulty = config.drop or config.slow or config.fail_429 or config.fail_500
        sluggish = config.trickle or config.stall_after_headers
        if not (faulty or sluggish or config.lost_response) or not _fault_applies(
            config.fault_paths, method, template, key
        ):
            await self.app(scope, receive, counting_send)
            return
        # Two draws per request, always, so a seed gives the same fault sequence whatever
        # the outcomes were (a third only when slow answers are configured).
        roll, slow_roll = state.rng.random(), state.rng.random()
        answer: Send = counting_send
        request_body: Receive = receive
        if sluggish:
            answer = _sluggish(counting_send, state.rng.random(), config, stats.faults)
        if roll < config.drop:
            stats.faults["drop"] += 1
            await _abort_connection(receive)
            return
        if slow_roll < config.slow:
            stats.faults["slow"] += 1
            # the request is read first, as a real server does: one that gave up waiting still
            # gets its work done (a run created after the client left)
            request_body = await _buffered(receive)
            await asyncio.sleep(config.slow_s)
        roll -= config.drop
        if roll < config.fail_429:
            stats.faults["429"] += 1
            await _rate_limited(config)(scope, request_body, answer)
            return
        roll -= config.fail_429
        if roll < config.fail_500:
            stats.faults["500"] += 1
            await _server_error()(scope, request_body, answer)
            return
        roll -= config.fail_500
        if roll < config.lost_response:
            stats.faults["lost_response"] += 1

            async def discard(message: Message) -> None:
                return None

            await self.app(scope, request_body, discard)
            await state.flush()
            await _abort_connection(receive)
            return
        await self.app(scope, request_body, answer)


async def _buffered(receive: Receive) -> Receive:
    """Read the whole request body now; the app gets it later from memory."""
    body = b""
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        body += message.get("body", b"")
        if not message.get("more_body", False):
            break
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if replayed:
            return await receive()
        replayed = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


def _sluggish(
    send: Send, roll: float, config: EmulatorConfig, faults: MutableMapping[str, int]
) -> Send:
    """An answer that starts (the work is done, the headers go out) and then crawls:
    trickled a byte at a time, or stalled before its body."""
    if roll < config.trickle:
        faults["trickle"] += 1
        mode = "trickle"
    elif roll - config.trickle < config.stall_after_headers:
        faults["stall_after_headers"] += 1
        mode = "stall"
    else:
        return send

    async def slow_send(message: Message) -> None:
        if message["type"] != "http.response.body":
            await send(message)
            return
        body: bytes = message.get("body", b"")
        more = message.get("more_body", False)
        if mode == "stall":
            await asyncio.sleep(config.stall_after_headers_s)
            await send(message)
            return
        deadline = time.monotonic() + config.trickle_s
        sent = 0
        while sent < len(body) and time.monotonic() < deadline:
            await send(
                {"type": "http.response.body", "body": body[sent : sent + 1], "more_body": True}
            )
            sent += 1
            await asyncio.sleep(config.trickle_byte_s)
        await send({"type": "http.response.body", "body": body[sent:], "more_body": more})

    return slow_send


def _azure_refusal(config: EmulatorConfig, scope: Scope) -> Response | None:
    """Azure's answers to a request without its api-version or its key header."""
    if config.require_query:
        given = parse_qs(scope.get("query_string", b"").decode(), keep_blank_values=True)
        for name, value in parse_qsl(config.require_query):
            if value not in given.get(name, []):
                return error_response(
                    ApiError(
                        404,
                        f"Resource not found (the askq emulator requires the query parameter "
                        f"{name}={value})",
                        code="404",
                    )
                )
    if config.require_key_header:
        wanted = config.require_key_header.lower().encode()
        if not any(k == wanted and v.strip() for k, v in scope["headers"]):
            return error_response(
                ApiError(
                    401,
                    "Access denied due to invalid subscription key or wrong API endpoint "
                    f"(the askq emulator wants the key in the {config.require_key_header} "
                    "header).",
                    code="401",
                )
            )
    return None


def _fault_applies(patterns: list[str], method: str, template: str, key: str) -> bool:
    if not patterns:
        return True
    return any(
        p in (method, template, key) or fnmatch(key, p) or fnmatch(template, p) for p in patterns
    )


def _rate_limited(config: EmulatorConfig) -> Response:
    seconds = config.retry_after_s
    shown = str(int(seconds)) if float(seconds).is_integer() else f"{seconds:g}"
    return error_response(
        ApiError(
            429,
            f"Rate limit reached for requests (emulated by askq). Please try again in {shown}s.",
            type="requests",
            code="rate_limit_exceeded",
            headers={
                "retry-after": shown,
                "retry-after-ms": str(math.ceil(seconds * 1000)),
                "x-ratelimit-remaining-requests": "0",
            },
        )
    )


def _server_error() -> Response:
    return error_response(
        ApiError(
            500,
            "The server had an error while processing your request. Sorry about that! "
            "(emulated by askq)",
            type="server_error",
        )
    )


# --- control routes ---------------------------------------------------------------------


def _public_config(config: EmulatorConfig) -> dict[str, Any]:
    data = config.model_dump()
    for secret in ("upstream_api_key", "webhook_secret"):
        if data.get(secret):
            data[secret] = "***"  # secrets never leave the process
    if data.get("state_redis_url"):
        data["state_redis_url"] = redact_url(data["state_redis_url"])
    return data


async def control_stats(request: Request) -> Response:
    state: EmulatorState = request.app.state.emulator
    snapshot = state.stats.snapshot(state.now())
    snapshot["webhooks"] = dict(state.webhooks.counts)
    return json_response(snapshot)


async def control_reset(request: Request) -> Response:
    state: EmulatorState = request.app.state.emulator
    state.reset()
    if state.store is not None:
        await state.store.clear()
    return json_response({"ok": True})


async def control_get_config(request: Request) -> Response:
    state: EmulatorState = request.app.state.emulator
    return json_response(_public_config(state.config))


async def control_patch_config(request: Request) -> Response:
    state: EmulatorState = request.app.state.emulator
    body = await read_json(request)
    try:
        config = state.configure(body)
    except ValidationError as exc:
        raise ApiError(400, f"Invalid emulator config: {exc.errors(include_url=False)}") from exc
    return json_response(_public_config(config))


async def control_health(request: Request) -> Response:
    return json_response({"ok": True})


CONTROL_ROUTES = [
    Route("/_emulator/stats", control_stats, methods=["GET"]),
    Route("/_emulator/reset", control_reset, methods=["POST"]),
    Route("/_emulator/config", control_get_config, methods=["GET"]),
    Route("/_emulator/config", control_patch_config, methods=["PATCH"]),
    Route("/_emulator/health", control_health, methods=["GET"]),
]


# --- errors -----------------------------------------------------------------------------


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code in (404, 405):
        message = f"Invalid URL ({request.method} {request.url.path})"
        return error_response(ApiError(exc.status_code, message))
    return error_response(ApiError(exc.status_code, str(exc.detail)))


async def _crash(request: Request, exc: Exception) -> Response:
    return error_response(
        ApiError(500, f"askq emulator internal error: {exc!r}", type="server_error")
    )


def redact_url(url: str) -> str:
    """A URL with its password hidden (Redis URLs often hold one)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


async def open_saved_state(state: EmulatorState, url: str) -> None:
    """Load what an earlier process saved and go on with it (see persist.py)."""
    from emulator.persist import StateStore

    store = StateStore(url, state.config.state_prefix, state.config.state_ttl_s)
    try:
        await store.load(state)
    except (OSError, RedisError) as exc:
        await store.aclose()
        raise RuntimeError(
            f"cannot load the bridge's state from {redact_url(url)} (state_redis_url): {exc}"
        ) from None
    state.store = store
    assistants.resume(state)
    responses.resume(state)


def create_app(config: EmulatorConfig) -> Starlette:
    """A fresh emulator with its own in-memory state (two apps never share anything)."""
    state = EmulatorState(config)
    routes: list[BaseRoute] = [
        *BETA_ROUTES,
        *AGENTS_ROUTES,
        *RESPONSES_ROUTES,
        *CHAT_ROUTES,
        *CONTROL_ROUTES,
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if config.state_redis_url:
            await open_saved_state(state, config.state_redis_url)
        yield
        await state.aclose()

    app = Starlette(
        routes=routes,
        middleware=[Middleware(ApiLayer, state=state, routes=routes)],
        exception_handlers={
            ApiError: _api_error,
            HTTPException: _http_error,
            Exception: _crash,
        },
        lifespan=lifespan,
    )
    app.state.emulator = state
    return app
