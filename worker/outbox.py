"""The Redis side of callbacks: the outbox that job ends write, and each callback's state.

When a job that names `on_done` or `webhook_url` ends, the transition script that makes it
terminal also writes one callback record per target and an outbox entry (lua.py,
CALLBACKS_ON_END): the intent and the end are one atomic step, so no crash can end a job
without its callbacks, or write them twice. A batch with `on_batch_done` or a webhook gets
its summary the same way, from the script that ends its last job (or, when the last job
ended while a submission was still adding jobs, from the end of that submission).

The pump publishes due entries (worker/callbacks.py): a Celery callback leaves the outbox
once the broker took it; a webhook stays until a delivery task reports it delivered or given
up. Claimed entries are re-scored to a lease end rather than removed, so a pump or task that
dies between claiming and finishing leaves the callback to be claimed again: delivery is at
least once, and every message carries its callback id for the receiver to drop a repeat.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis

from worker import lua
from worker.keys import Keys
from worker.models import BatchSummary, Delivery
from worker.redis_ops import Command, Op, RoundTrip, ScriptCall, SyncRunner, command
from worker.redis_store import RedisStore, request_id, text
from worker.settings import Settings
from worker.states import JobStatus

PUBLISH_LEASE_S = 30.0
"""How long a claimed callback waits before it is claimed again (its claimer died): far
above the milliseconds a publish takes, and above a webhook attempt's bound."""


def callback_ttl(settings: Settings) -> int:
    """A callback's record outlives its job's by the retry window of a webhook."""
    return int(settings.result_ttl_s + settings.callback_retry_s)


def callback_spec(keys: Keys, settings: Settings) -> dict[str, Any]:
    """The part of the transition script's callback spec every callback shares."""
    return {"prefix": keys.callback_prefix, "ttl": callback_ttl(settings)}


def _time(raw: str | None) -> datetime | None:
    return datetime.fromtimestamp(float(raw), UTC) if raw else None


def _pairs(flat: list[Any]) -> dict[str, str]:
    return {text(flat[i]): text(flat[i + 1]) for i in range(0, len(flat), 2)}


def _without_query(url: str) -> str:
    """A webhook URL as shown in status: its query or user part may hold a token."""
    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if parts.port:
        netloc = f"{netloc}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def open_batch(
    keys: Keys,
    batch_id: str,
    task: str | None,
    webhook: str | None,
    name: str | None,
    *,
    created: float,
    ttl: int,
) -> ScriptCall:
    """The script that opens a submission into `batch_id` (before its first job is written)."""
    return ScriptCall(
        lua.OPEN_BATCH,
        [keys.batch_callbacks(batch_id)],
        [ttl, task or "", webhook or "", name or "", repr(created)],
    )


def seal_batch(keys: Keys, settings: Settings, batch_id: str) -> ScriptCall:
    """The script that seals a submission into `batch_id`: the batch may end now (or has)."""
    return ScriptCall(
        lua.SEAL_BATCH,
        [keys.batch_callbacks(batch_id), keys.batch_counts(batch_id), keys.outbox, keys.wake],
        [json.dumps(callback_spec(keys, settings)), batch_id],
    )


def deliveries(keys: Keys, identifier: str) -> Op[list[Delivery]]:
    """The callbacks of a job's last end, or of a batch's last round (oldest first)."""
    owner = (
        keys.batch_callbacks(identifier)
        if identifier.startswith("batch_")
        else keys.job(identifier)
    )
    ids = yield from command("hget", owner, "callbacks")
    names = [name for name in text(ids or b"").split(",") if name]
    found = yield RoundTrip([Command("hgetall", (keys.callback(name),)) for name in names])
    return [
        Callback(name, {text(a): text(b) for a, b in raw.items()}).delivery()
        for name, raw in zip(names, found, strict=True)
        if raw
    ]


@dataclass(frozen=True)
class Callback:
    callback_id: str
    fields: dict[str, str]

    @property
    def kind(self) -> str:
        return self.fields["kind"]

    @property
    def target(self) -> str:
        return self.fields["target"]

    @property
    def event(self) -> str:
        return self.fields["event"]

    @property
    def attempts(self) -> int:
        return int(self.fields.get("attempts") or 0)

    def payload(self) -> dict[str, Any]:
        """What the callback carries: the job's result record, or the batch summary. Built
        from what the ending script stored, so a repeat carries the same payload."""
        f = self.fields
        if self.event == "job.done":
            payload: dict[str, Any] = json.loads(f["payload"])
            return payload
        flat = json.loads(f["counts"]) or []
        counts = {JobStatus(k): int(v) for k, v in _pairs(flat).items() if int(v) > 0}
        last = _time(f["last_at"])
        assert last is not None
        summary = BatchSummary(
            batch_id=f["subject"],
            name=f.get("name") or None,
            counts=counts,
            total=sum(counts.values()),
            created_at=_time(f.get("batch_created_at")),
            first_finished_at=_time(f.get("first_at")) or last,
            last_finished_at=last,
        )
        return summary.model_dump(mode="json")

    def delivery(self) -> Delivery:
        f = self.fields
        status = f.get("last_status")
        return Delivery(
            callback_id=self.callback_id,
            kind=self.kind,
            target=self.target if self.kind == "task" else _without_query(self.target),
            event=self.event,
            state=f.get("state", "pending"),
            attempts=self.attempts,
            last_status=int(status) if status else None,
            last_error=f.get("last_error") or None,
            created_at=_time(f["created_at"]) or datetime.now(UTC),
            last_attempt_at=_time(f.get("last_attempt_at")),
            sent_at=_time(f.get("sent_at")),
            delivered_at=_time(f.get("delivered_at")),
            given_up_at=_time(f.get("given_up_at")),
        )


@dataclass(frozen=True)
class ClaimedCallbacks:
    now: float
    callbacks: list[Callback]


class OutboxStore(RedisStore):
    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        super().__init__(client, settings)
        self._open = client.register_script(lua.OPEN_BATCH)
        self._seal = client.register_script(lua.SEAL_BATCH)
        self._claim = client.register_script(lua.CLAIM_OUTBOX)
        self._sent = client.register_script(lua.CALLBACK_SENT)
        self._take = client.register_script(lua.TAKE_CALLBACK)
        self._attempt = client.register_script(lua.CALLBACK_ATTEMPT)

    # -- batches --------------------------------------------------------------------------

    def open_batch(
        self,
        batch_id: str,
        *,
        task: str | None,
        webhook: str | None,
        name: str | None,
        created: float,
        ttl: int,
    ) -> None:
        """A submission into `batch_id` begins (before its first job is written)."""
        call = open_batch(self.keys, batch_id, task, webhook, name, created=created, ttl=ttl)
        self._call(lambda: self._open(keys=call.keys, args=call.args))

    def seal_batch(self, batch_id: str) -> None:
        """A submission into `batch_id` finished: the batch may end now (or has)."""
        call = seal_batch(self.keys, self.settings, batch_id)
        self._call(lambda: self._seal(keys=call.keys, args=call.args))

    # -- publishing and delivering --------------------------------------------------------

    def claim(self, limit: int) -> ClaimedCallbacks:
        k = self.keys
        req = request_id()
        raw = self._call(
            lambda: self._claim(
                keys=[k.outbox, k.claim_reply(req)],
                args=[limit, repr(PUBLISH_LEASE_S), k.callback_prefix],
            )
        )
        callbacks = [Callback(text(raw[i]), _pairs(raw[i + 1])) for i in range(1, len(raw), 2)]
        return ClaimedCallbacks(float(text(raw[0])), callbacks)

    def sent(self, callback_id: str) -> None:
        k = self.keys
        self._call(lambda: self._sent(keys=[k.outbox, k.callback(callback_id)], args=[callback_id]))

    def take(self, callback_id: str, hold_s: float) -> Callback | None:
        """The callback for the one delivery task its claim published, else None."""
        k = self.keys
        raw = self._call(
            lambda: self._take(
                keys=[k.outbox, k.callback(callback_id)],
                args=[callback_id, repr(hold_s), request_id()],
            )
        )
        return Callback(callback_id, _pairs(raw)) if raw else None

    def attempted(
        self, callback_id: str, *, ok: bool, status: int | None, error: str, delay_s: float
    ) -> str:
        """Record one delivery attempt; returns the state (`delivered`, `retrying`,
        `given_up`)."""
        k = self.keys
        state = self._call(
            lambda: self._attempt(
                keys=[k.outbox, k.callback(callback_id)],
                args=[
                    callback_id,
                    "1" if ok else "0",
                    "" if status is None else str(status),
                    error,
                    repr(delay_s),
                    repr(self.settings.callback_retry_s),
                    request_id(),
                ],
            )
        )
        return text(state)

    def next_due_at(self) -> float | None:
        first = self._call(lambda: self.redis.zrange(self.keys.outbox, 0, 0, withscores=True))
        return float(first[0][1]) if first else None

    # -- reading --------------------------------------------------------------------------

    def deliveries(self, identifier: str) -> list[Delivery]:
        """The callbacks of a job's last end, or of a batch's last round (oldest first)."""
        return SyncRunner(self.redis).run(deliveries(self.keys, identifier))
