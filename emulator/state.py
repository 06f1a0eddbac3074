"""All emulator state, in memory, owned by one event loop (so no locks are needed)."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from emulator.config import EmulatorConfig
from emulator.stats import Stats
from emulator.webhooks import WebhookSender

if TYPE_CHECKING:
    import httpx

    from emulator.agent_sessions import Session
    from emulator.assistants import Assistant, Run, Thread
    from emulator.responses import Conversation, ResponseRecord


def queued_for(run_time_s: float) -> float:
    """The short `queued` phase before `in_progress`: a tenth of the run, at most 50 ms."""
    return min(run_time_s * 0.1, 0.05)


class EmulatorState:
    """Everything the emulator remembers; `reset()` forgets it all but keeps the config."""

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.rng = random.Random(config.seed)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._http: httpx.AsyncClient | None = None
        self.webhooks = WebhookSender(self)
        self.reset()

    def reset(self) -> None:
        self.assistants: dict[str, Assistant] = {}
        self.threads: dict[str, Thread] = {}
        self.runs: dict[str, Run] = {}
        self.responses: dict[str, ResponseRecord] = {}
        self.conversations: dict[str, Conversation] = {}
        # call_id -> (response id that asked, tool name): Responses follow-ups name their tools.
        self.function_calls: dict[str, tuple[str, str]] = {}
        self.agents: dict[str, dict[str, Any]] = {}
        self.sessions: dict[str, Session] = {}
        # Idempotency-Key -> (request fingerprint, status, body) of the first success
        self.idempotency: dict[str, tuple[str, int, bytes]] = {}
        self.stats = Stats()
        self.rng = random.Random(self.config.seed)
        self.webhooks.reset()
        for task in self._tasks:
            task.cancel()
        self._tasks.clear()

    def configure(self, fields: dict[str, Any]) -> EmulatorConfig:
        """Validate and apply changed fields; a new `seed` restarts the fault sequence."""
        merged = self.config.model_dump() | fields
        self.config = EmulatorConfig.model_validate(merged)
        if "seed" in fields:
            self.rng = random.Random(self.config.seed)
        return self.config

    @staticmethod
    def now() -> float:
        return time.time()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run background work (chat engine calls), keeping a reference so it is not collected."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def http(self) -> httpx.AsyncClient:
        """One pooled client for upstream chat calls, created inside the serving loop."""
        import httpx

        if self._http is None:
            self._http = httpx.AsyncClient(
                timeout=self.config.upstream_timeout_s,
                limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
            )
        return self._http

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        await self.webhooks.aclose()
        if self._http is not None:
            await self._http.aclose()
            self._http = None
