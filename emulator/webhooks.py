"""Signed webhook deliveries, as OpenAI sends them (Standard Webhooks headers
`webhook-id`, `webhook-timestamp`, `webhook-signature`; event shapes from the SDK's
`openai/types/webhooks/`), with faults to test a receiver against: dropped, duplicated
and late deliveries.

Progress is lazy everywhere else in the emulator; an event is the one thing that must happen
on its own, so an object that will end schedules a look at its end time (only when a
`webhook_url` is configured: without one nothing is scheduled).
"""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import httpx

from emulator.engine import new_id
from worker.signing import signed_headers

if TYPE_CHECKING:
    from emulator.state import EmulatorState

Event = tuple[str, dict[str, Any]]
"""An event type and its `data`."""

DELIVERY_ATTEMPTS = 3
RETRY_S = 0.5
KEEPALIVE_S = 1.0


class WebhookSender:
    def __init__(self, state: EmulatorState) -> None:
        self.state = state
        self.counts: Counter[str] = Counter()
        self.rng = random.Random(state.config.seed)
        self._client: httpx.AsyncClient | None = None

    def reset(self) -> None:
        self.counts = Counter()
        self.reseed()

    def reseed(self) -> None:
        """Restart the drop/duplicate/delay sequence from the configured seed."""
        self.rng = random.Random(self.state.config.seed)

    @property
    def active(self) -> bool:
        config = self.state.config
        return bool(config.webhook_url and config.webhook_secret)

    def at(self, when: float, look: Callable[[], Event | None]) -> None:
        """At `when`, `look` at the object; deliver the event it returns, if any."""
        if self.active and when != float("inf"):
            self.state.spawn(self._later(when, look))

    def now(self, event: Event) -> None:
        if self.active:
            self.state.spawn(self.send(event))

    async def _later(self, when: float, look: Callable[[], Event | None]) -> None:
        # the loop's timers run on a monotonic clock and may wake a hair before `when` on
        # the wall clock the objects are scheduled with: sleep again rather than look early
        while (left := when - self.state.now()) > 0:
            await asyncio.sleep(left + 0.001)
        event = look()
        if event is not None:
            await self.send(event)

    async def send(self, event: Event) -> None:
        config = self.state.config
        # three draws per event, always, so a seed gives the same fault sequence
        drop, twice, late = self.rng.random(), self.rng.random(), self.rng.random()
        if drop < config.webhook_drop:
            self.counts["dropped"] += 1
            return
        if late < config.webhook_delay:
            self.counts["delayed"] += 1
            await asyncio.sleep(config.webhook_delay_s)
        kind, data = event
        body = json.dumps(
            {
                "id": new_id("evt_"),
                "object": "event",
                "created_at": int(self.state.now()),
                "type": kind,
                "data": data,
            }
        )
        webhook_id = new_id("wh_")
        copies = 2 if twice < config.webhook_duplicate else 1
        if copies == 2:
            self.counts["duplicated"] += 1
        for _ in range(copies):
            await self._post(webhook_id, body)

    async def _post(self, webhook_id: str, body: str) -> None:
        config = self.state.config
        assert config.webhook_url is not None and config.webhook_secret is not None
        for attempt in range(DELIVERY_ATTEMPTS):
            headers = signed_headers(config.webhook_secret, webhook_id, self.state.now(), body)
            headers["content-type"] = "application/json"
            try:
                reply = await self._http().post(config.webhook_url, content=body, headers=headers)
                if reply.is_success:
                    self.counts["delivered"] += 1
                    return
            except httpx.HTTPError:
                pass
            self.counts["retried"] += 1
            await asyncio.sleep(RETRY_S * 2**attempt)
        self.counts["failed"] += 1

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            # idle connections go before a receiver closes them (uvicorn: after 5 s): a POST
            # on a connection the server just closed fails and waits for a retry (measured:
            # +0.5 s on a third of deliveries)
            self._client = httpx.AsyncClient(
                timeout=10, limits=httpx.Limits(keepalive_expiry=KEEPALIVE_S)
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
