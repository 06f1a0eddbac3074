"""The bridge's memory in Redis, so a restarted emulator goes on with every thread and run.

Without it a restart forgets every thread, run and response: askq's next poll gets 404 and
the job fails for good. With `state_redis_url` set, each object a request or an upstream
answer changed is written (as JSON, one key per thread, response, conversation or assistant,
under `state_prefix`) before the answer leaves, and loaded again at start. A run whose
upstream call was cut by the restart is asked again (the model's work on it was lost with
the connection anyway). Progress stays lazy: what is saved is the schedule, so a run that
finished while the bridge was down is finished when it is read.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict, fields
from typing import Any

import redis.asyncio as aioredis

from emulator.assistants import Assistant, Run, Thread
from emulator.engine import Plan, Script, ToolCall
from emulator.responses import Conversation, ResponseRecord
from emulator.state import EmulatorState

KINDS = ("assistant", "thread", "conversation", "response")
Saved = Assistant | Thread | Conversation | ResponseRecord
RUN_LINKS = frozenset({"thread", "upstream"})
RESPONSE_LINKS = frozenset({"previous", "conversation", "upstream"})


def _script(data: dict[str, Any]) -> Script:
    return Script(**{**data, "tools": [tuple(t) for t in data["tools"]]})


def _plan(data: dict[str, Any] | None) -> Plan | None:
    if data is None:
        return None
    return Plan(**{**data, "tool_calls": [ToolCall(**c) for c in data["tool_calls"]]})


def _plain(record: Any, links: frozenset[str]) -> dict[str, Any]:
    """A dataclass's own fields, without the object links (saved as ids instead)."""
    out: dict[str, Any] = {}
    for f in fields(record):
        if f.name in links:
            continue
        value = getattr(record, f.name)
        if isinstance(value, Script | Plan):
            value = asdict(value)
        elif f.name == "pending_calls":
            value = [asdict(c) for c in value]
        out[f.name] = value
    return out


def dump(record: Saved) -> tuple[str, str]:
    """(kind, JSON) of one saved object; inf times are JSON's Infinity."""
    if isinstance(record, Thread):
        data = {
            "id": record.id,
            "created_at": record.created_at,
            "metadata": record.metadata,
            "tool_resources": record.tool_resources,
            "messages": record.messages,
            "runs": [_plain(run, RUN_LINKS) for run in record.runs],
            "active_run": record.active_run.id if record.active_run else None,
        }
        return "thread", json.dumps(data)
    if isinstance(record, ResponseRecord):
        data = _plain(record, RESPONSE_LINKS)
        data["previous"] = record.previous.id if record.previous else None
        data["conversation"] = record.conversation.id if record.conversation else None
        return "response", json.dumps(data)
    if isinstance(record, Conversation):
        data = _plain(record, frozenset({"active"}))
        data["active"] = record.active.id if record.active else None
        return "conversation", json.dumps(data)
    return "assistant", json.dumps(asdict(record))


def _thread(data: dict[str, Any]) -> Thread:
    thread = Thread(
        id=data["id"],
        created_at=data["created_at"],
        metadata=data["metadata"],
        tool_resources=data["tool_resources"],
        messages=data["messages"],
    )
    for raw in data["runs"]:
        run = Run(
            thread=thread,
            **{
                **raw,
                "script": _script(raw["script"]),
                "plan": _plan(raw["plan"]),
                "pending_calls": [ToolCall(**c) for c in raw["pending_calls"]],
                "tool_results": [tuple(r) for r in raw["tool_results"]],
            },
        )
        thread.runs.append(run)
        if run.id == data["active_run"]:
            thread.active_run = run
    return thread


class StateStore:
    """Writes changed objects to Redis and reads them all back at start."""

    def __init__(self, url: str, prefix: str, ttl_s: int) -> None:
        self.redis = aioredis.Redis.from_url(url)
        self.prefix = prefix
        self.ttl_s = ttl_s
        self._write_order = asyncio.Lock()

    def key(self, kind: str, object_id: str) -> str:
        return f"{self.prefix}{kind}:{object_id}"

    async def save(self, changed: list[Saved], forgotten: list[tuple[str, str]]) -> None:
        # serialised now, in the loop's turn, so a later change can never be overwritten by
        # an older copy; the lock keeps writes in the order their changes happened
        rows = [dump(record) for record in changed]
        ids = [record.id for record in changed]
        async with self._write_order:
            pipe = self.redis.pipeline(transaction=False)
            for (kind, raw), object_id in zip(rows, ids, strict=True):
                pipe.set(self.key(kind, object_id), raw, ex=self.ttl_s)
            for kind, object_id in forgotten:
                pipe.delete(self.key(kind, object_id))
            await pipe.execute()

    async def _all(self, kind: str) -> list[dict[str, Any]]:
        keys = [k async for k in self.redis.scan_iter(match=f"{self.prefix}{kind}:*", count=500)]
        values = await self.redis.mget(keys) if keys else []
        return [json.loads(v) for v in values if v is not None]

    async def load(self, state: EmulatorState) -> None:
        """Fill `state` with everything saved (links resolved by id)."""
        for data in await self._all("assistant"):
            state.assistants[data["id"]] = Assistant(**data)
        for data in await self._all("thread"):
            thread = _thread(data)
            state.threads[thread.id] = thread
            state.runs.update((run.id, run) for run in thread.runs)
        for data in await self._all("conversation"):
            data.pop("active")  # the response in progress is linked back below
            state.conversations[data["id"]] = Conversation(**data)
        links: dict[str, tuple[str | None, str | None]] = {}
        for data in await self._all("response"):
            links[data["id"]] = (data.pop("previous"), data.pop("conversation"))
            record = ResponseRecord(
                previous=None,
                conversation=None,
                **{**data, "script": _script(data["script"]), "plan": _plan(data["plan"])},
            )
            state.responses[record.id] = record
        for response_id, (previous, conversation) in links.items():
            record = state.responses[response_id]
            record.previous = state.responses.get(previous) if previous else None
            record.conversation = state.conversations.get(conversation) if conversation else None
            if record.conversation is not None and record.phase == "work":
                record.conversation.active = record
            for item in record.output:
                if item.get("type") == "function_call":
                    state.function_calls[item["call_id"]] = (record.id, item.get("name", ""))

    async def clear(self) -> None:
        keys = [k async for k in self.redis.scan_iter(match=f"{self.prefix}*", count=500)]
        if keys:
            await self.redis.delete(*keys)

    async def aclose(self) -> None:
        await self.redis.aclose()
