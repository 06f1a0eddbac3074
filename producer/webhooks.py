"""`askq webhooks`: the receiver for the provider's webhooks (Standard Webhooks, as OpenAI
signs them), on the ASGI stack askq already ships (Starlette + uvicorn).

`POST /webhooks` verifies the signature with ASKQ_WEBHOOK_SECRET (the `standardwebhooks`
reference implementation: HMAC-SHA256 over `id.timestamp.body`, timestamps within five
minutes), then hands the event's response or session id to one Lua script that makes the
job that recorded it due now. It never calls the API and holds no state of its own: run as
many replicas as you like behind one URL. Answers: 200 for every verified event (matched or
not, so the provider does not retry it), 400 for a bad signature, stale timestamp or
malformed body, 413 for an oversized one, 503 when Redis is away (the provider retries).

`GET /healthz` answers 200 while Redis answers, else 503.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import redis.asyncio as aioredis
import uvicorn
from redis.exceptions import RedisError
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from worker import lua
from worker.keys import Keys
from worker.settings import Settings
from worker.webhook_index import poke_args, poke_keys

log = logging.getLogger("askq.webhooks")

MAX_BODY_BYTES = 1 << 20
"""Provider events are small (ids and a type); anything bigger is not one."""

END_EVENTS = frozenset(
    {
        "response.completed",
        "response.failed",
        "response.cancelled",
        "response.incomplete",
        "agent.session.idle",
        "agent.session.failed",
        "agent.session.action_required",
    }
)
"""The events after which a job has something new to read. Others (`agent.session.created`,
`agent.session.in_progress`, batch or fine-tuning events) are counted as ignored."""


class Receiver:
    def __init__(self, settings: Settings, client: aioredis.Redis) -> None:
        self.verifier = Webhook(settings.webhook_secret.get_secret_value())
        self.keys = Keys(settings.key_prefix)
        self.redis = client
        self.poke = client.register_script(lua.WEBHOOK_POKE)

    async def count(self, outcome: str) -> None:
        try:
            await self.redis.hincrby(self.keys.webhook_events, outcome, 1)
        except RedisError as exc:
            log.warning("webhooks: cannot count %s (%s)", outcome, exc)

    async def receive(self, request: Request) -> JSONResponse:
        body = await read_capped(request)
        if body is None:
            await self.count("rejected")
            return reply(413, "body too large")
        headers = dict(request.headers)
        try:
            # the reference implementation raises other errors on malformed signature
            # headers (a missing comma, bad base64): any failure to verify is a rejection
            event = self.verifier.verify(body, headers)
        except (WebhookVerificationError, ValueError, TypeError) as exc:
            await self.count("rejected")
            return reply(400, f"signature not verified: {exc}")
        remote_id = (event.get("data") or {}).get("id") if isinstance(event, dict) else None
        if not isinstance(remote_id, str) or not isinstance(event.get("type"), str):
            await self.count("rejected")
            return reply(400, "not an event: no type or data.id")
        try:
            await self.redis.hincrby(self.keys.webhook_events, "received", 1)
            if event["type"] not in END_EVENTS:
                await self.redis.hincrby(self.keys.webhook_events, "ignored", 1)
                return reply(200, "ignored")
            outcome = await self.poke(
                keys=poke_keys(self.keys, headers["webhook-id"], remote_id),
                args=poke_args(self.keys),
            )
        except RedisError as exc:
            log.warning("webhooks: Redis unavailable (%s); the provider will retry", exc)
            return reply(503, "job store unavailable")
        return reply(200, outcome.decode() if isinstance(outcome, bytes) else str(outcome))

    async def health(self, request: Request) -> JSONResponse:
        try:
            await self.redis.ping()
        except RedisError as exc:
            return reply(503, f"Redis: {exc}")
        return reply(200, "ok")


async def read_capped(request: Request) -> bytes | None:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def reply(status: int, message: str) -> JSONResponse:
    body: dict[str, Any] = {"ok": status < 300, "message": message}
    return JSONResponse(body, status_code=status)


def create_app(settings: Settings) -> Starlette:
    """The receiver for these settings (ASKQ_WEBHOOK_SECRET must be set)."""
    if not settings.webhooks_on:
        raise ValueError("ASKQ_WEBHOOK_SECRET is not set: there is nothing to verify with")
    client = aioredis.Redis.from_url(
        settings.redis_url, socket_timeout=5, socket_connect_timeout=5, health_check_interval=15
    )
    receiver = Receiver(settings, client)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await client.aclose()

    return Starlette(
        routes=[
            Route("/webhooks", receiver.receive, methods=["POST"]),
            Route("/healthz", receiver.health, methods=["GET"]),
        ],
        lifespan=lifespan,
    )


def serve_webhooks(settings: Settings, host: str, port: int) -> None:
    uvicorn.run(create_app(settings), host=host, port=port, log_level="warning")
