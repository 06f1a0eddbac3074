"""All emulator state, in memory, owned by one event loop (so no locks are needed)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Coroutine
from typing import TYPE_CHECKING, Any

from emulator.config import EmulatorConfig
from emulator.stats import Stats
from emulator.webhooks import WebhookSender

if TYPE_CHECKING:
    import httpx

    from emulator.agent_sessions import Session
    from emulator.assistants import Assistant, Run, Thread
    from emulator.persist import Saved, StateStore
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
        self._upstream_active = 0
        self._slot_free: asyncio.Condition | None = None
        self.store: StateStore | None = None
        self._changed: dict[int, Saved] = {}
        self._forgotten: list[tuple[str, str]] = []
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
        self._changed = {}
        self._forgotten = []
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
            self.webhooks.reseed()
        if "upstream_concurrency" in fields and self._slot_free is not None:
            self.spawn(self._wake_waiters())  # a higher limit lets waiting runs go now
        return self.config

    def touch(self, *records: Saved | None) -> None:
        """Mark objects changed: with a state store they are saved before the next answer."""
        if self.store is None:
            return
        for record in records:
            if record is not None:
                self._changed[id(record)] = record

    def forget(self, kind: str, object_id: str) -> None:
        if self.store is not None:
            self._forgotten.append((kind, object_id))

    async def flush(self) -> None:
        """Save what changed since the last flush (nothing without a state store)."""
        if self.store is None or not (self._changed or self._forgotten):
            return
        changed, self._changed = list(self._changed.values()), {}
        forgotten, self._forgotten = self._forgotten, []
        await self.store.save(changed, forgotten)

    @staticmethod
    def now() -> float:
        return time.time()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run background work (chat engine calls), keeping a reference so it is not collected;
        the task is returned so a cancel can stop it."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    @contextlib.asynccontextmanager
    async def upstream_slot(self) -> AsyncIterator[None]:
        """Hold one of `upstream_concurrency` slots (the limit in force now) while calling."""
        if self._slot_free is None:
            self._slot_free = asyncio.Condition()
        gate = self._slot_free

        def free() -> bool:
            limit = self.config.upstream_concurrency
            return limit is None or self._upstream_active < limit

        async with gate:
            await gate.wait_for(free)
            self._upstream_active += 1
        try:
            yield
        finally:
            self._upstream_active -= 1
            self.spawn(self._wake_waiters())

    async def _wake_waiters(self) -> None:
        if self._slot_free is not None:
            async with self._slot_free:
                self._slot_free.notify_all()

    def http(self) -> httpx.AsyncClient:
        """One pooled client for upstream chat calls, created inside the serving loop."""
        import httpx

        if self._http is None:
            # the timeout is given per request (upstream_timeout_s in force then)
            self._http = httpx.AsyncClient(
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
        if self.store is not None:
            await self.store.aclose()
