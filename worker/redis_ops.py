"""Redis work written once, performed by a blocking or an asyncio client (sans-I/O).

An operation is a generator: it yields what it needs done, a `RoundTrip` (Redis commands
sent as one pipeline) or a `Pause`, and is sent back the replies. Which keys, what the
replies mean and what to do next therefore exist once, for `producer.Client` and
`producer.AsyncClient` alike; `SyncRunner` and `AsyncRunner` only carry the effects out. A
failure is thrown into the operation where it yielded, so its own try/except reads as in
plain code. A *flow* also yields results between its effects (a batch's records, as they
are read or as jobs end), which the runner hands on to its caller one by one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import redis
import redis.asyncio

from worker.errors import AskqError
from worker.redis_store import store_error

T = TypeVar("T")


@dataclass(frozen=True)
class Command:
    """One redis-py command by its method name (`hmget`, `xread`, ...)."""

    name: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ScriptCall:
    """One run of a Lua script of worker/lua.py (loaded on first use, then by its sha)."""

    source: str
    keys: Sequence[str]
    args: Sequence[Any]


@dataclass(frozen=True)
class RoundTrip:
    """Commands sent together in one pipeline; the reply is the list of their replies."""

    commands: Sequence[Command | ScriptCall]
    transaction: bool = False

    def alone(self) -> Command | None:
        """The one command of this round trip, sent without a pipeline: redis-py re-sends a
        lone command after a timeout (REDIS_RETRIES), a pipeline only after a dropped link."""
        if len(self.commands) == 1 and not self.transaction:
            call = self.commands[0]
            if isinstance(call, Command):
                return call
        return None


@dataclass(frozen=True)
class Pause:
    """Wait this long before going on (`time.sleep` or `asyncio.sleep`)."""

    seconds: float


Effect = RoundTrip | Pause
EFFECTS = (RoundTrip, Pause)
Op = Generator[Any, Any, T]
"""An operation: yields effects, is sent their outcomes, returns a T."""
Flow = Generator[Any, Any, None]
"""A flow: yields effects (sent their outcomes) and results (sent None), returns nothing."""


def command(name: str, *args: Any, **kwargs: Any) -> Op[Any]:
    """One command in a round trip of its own; returns its reply."""
    (reply,) = yield RoundTrip([Command(name, args, kwargs)])
    return reply


class _Pipelines:
    """Builds one round trip's pipeline; scripts are registered once per client."""

    def __init__(self, client: redis.Redis | redis.asyncio.Redis) -> None:
        self.client = client
        self.scripts: dict[str, Any] = {}

    def build(self, trip: RoundTrip) -> Any:
        pipe: Any = self.client.pipeline(transaction=trip.transaction)
        for call in trip.commands:
            if isinstance(call, Command):
                getattr(pipe, call.name)(*call.args, **call.kwargs)
                continue
            script = self.scripts.get(call.source)
            if script is None:
                script = self.scripts[call.source] = self.client.register_script(call.source)
            # what Script.__call__ does with a pipeline, without the asyncio flavour's await:
            # the pipeline loads the script on execute when the server lacks its sha
            pipe.scripts.add(script)
            pipe.evalsha(script.sha, len(call.keys), *call.keys, *call.args)
        return pipe


def _returned(operation: Op[T], outcome: list[T]) -> Flow:
    """The operation as a flow that keeps its return value in `outcome`."""
    outcome.append((yield from operation))


def _advance(operation: Generator[Any, Any, Any], reply: Any, error: AskqError | None) -> Any:
    return operation.throw(error) if error is not None else operation.send(reply)


class SyncRunner:
    """Performs operations on a blocking redis-py client."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self._pipelines = _Pipelines(client)

    def perform(self, effect: Effect) -> Any:
        if isinstance(effect, Pause):
            time.sleep(effect.seconds)
            return None
        alone = effect.alone()
        try:
            if alone is not None:
                return [getattr(self.redis, alone.name)(*alone.args, **alone.kwargs)]
            return self._pipelines.build(effect).execute()
        except redis.RedisError as exc:
            raise store_error(exc) from exc

    def run(self, operation: Op[T]) -> T:
        outcome: list[T] = []
        for item in self.iterate(_returned(operation, outcome)):
            raise TypeError(f"an operation yielded a result: {item!r}")
        return outcome[0]

    def iterate(self, flow: Flow) -> Iterator[Any]:
        reply: Any = None
        error: AskqError | None = None
        while True:
            try:
                item = _advance(flow, reply, error)
            except StopIteration:
                return
            reply, error = None, None
            if not isinstance(item, EFFECTS):
                yield item
                continue
            try:
                reply = self.perform(item)
            except AskqError as exc:
                error = exc


class AsyncRunner:
    """Performs operations on a `redis.asyncio` client, never blocking the event loop."""

    def __init__(self, client: redis.asyncio.Redis) -> None:
        self.redis = client
        self._pipelines = _Pipelines(client)

    async def perform(self, effect: Effect) -> Any:
        if isinstance(effect, Pause):
            await asyncio.sleep(effect.seconds)
            return None
        alone = effect.alone()
        try:
            if alone is not None:
                return [await getattr(self.redis, alone.name)(*alone.args, **alone.kwargs)]
            return await self._pipelines.build(effect).execute()
        except redis.RedisError as exc:
            raise store_error(exc) from exc

    async def run(self, operation: Op[T]) -> T:
        outcome: list[T] = []
        async for item in self.iterate(_returned(operation, outcome)):
            raise TypeError(f"an operation yielded a result: {item!r}")
        return outcome[0]

    async def iterate(self, flow: Flow) -> AsyncIterator[Any]:
        reply: Any = None
        error: AskqError | None = None
        while True:
            try:
                item = _advance(flow, reply, error)
            except StopIteration:
                return
            reply, error = None, None
            if not isinstance(item, EFFECTS):
                yield item
                continue
            try:
                reply = await self.perform(item)
            except AskqError as exc:
                error = exc
