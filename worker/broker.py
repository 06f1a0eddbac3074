"""The Redis broker transport, with two guards: against a crash on a lost connection, and
against a crash on a full Redis.

Celery 5.7 handles a lost broker connection by collecting the connection object (its
`client` becomes None) and then closing it. Work still tied to the old channel — restoring
its unacknowledged messages on close, or acknowledging a task that finished meanwhile —
asks kombu's `_connparams` for the dead connection's address and dies with
`AttributeError: 'NoneType' object has no attribute 'hostname'` (or `'client'`): an
"Unrecoverable error" that ends the worker (reproduced by tests/faults/test_crashes.py with
the prefork pool, kombu 5.7.0; the family of kombu#582 and kombu#970).

Raising the connection error kombu expects instead lets its own handling take over: the
close is ignored, the ack is logged as "Couldn't ack", and the message stays in kombu's
unacked index (restored after the visibility timeout). askq loses nothing either way: the
job's lease in the due set re-dispatches it.

A full Redis (`maxmemory` with `noeviction`) refuses kombu's bookkeeping writes: the ack
(a MULTI of ZREM + HDEL), the unacked index written on delivery, the restore mutex. Kombu lets
the `OutOfMemoryError` escape, Celery calls it "Unrecoverable error" and the worker exits 1 (a
crash loop under a supervisor while Redis stays full; reproduced by
tests/faults/test_full_redis.py). The guarded QoS logs (now and then) and goes on: an ack
that could not be written leaves the message in the unacked index, restored after the
visibility timeout and then a no-op (its ticket was taken); a delivery that could not be
indexed is still run. askq's own writes fail as `RedisFull` and the job's lease brings it back.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import redis as redis_py
from kombu.transport import TRANSPORT_ALIASES, redis, virtual

log = logging.getLogger("askq.broker")

QUIET_S = 60.0


def is_full(exc: BaseException) -> bool:
    """Redis refused a write for lack of memory (also when the refusal came back through a
    pipeline or a script)."""
    return isinstance(exc, redis_py.exceptions.OutOfMemoryError) or (
        isinstance(exc, redis_py.exceptions.ResponseError) and "OOM" in str(exc)
    )


class QoS(redis.QoS):
    _last_warning = 0.0

    def _full(self, what: str, exc: BaseException) -> None:
        now = time.monotonic()
        if now - QoS._last_warning >= QUIET_S:
            QoS._last_warning = now
            log.warning("broker: Redis is out of memory; %s skipped (%s)", what, exc)

    def append(self, message: Any, delivery_tag: Any) -> None:
        try:
            super().append(message, delivery_tag)
        except redis_py.exceptions.ResponseError as exc:
            if not is_full(exc):
                raise
            self._full("unacked index of a delivered message", exc)
            virtual.QoS.append(self, message, delivery_tag)

    def ack(self, delivery_tag: Any) -> None:
        try:
            super().ack(delivery_tag)
        except redis_py.exceptions.ResponseError as exc:
            if not is_full(exc):
                raise
            self._full("ack (the message comes back after the visibility timeout, a no-op)", exc)
            virtual.QoS.ack(self, delivery_tag)

    def reject(self, delivery_tag: Any, requeue: bool = False) -> None:
        try:
            super().reject(delivery_tag, requeue)
        except redis_py.exceptions.ResponseError as exc:
            if not is_full(exc):
                raise
            self._full("reject", exc)
            virtual.QoS.ack(self, delivery_tag)

    def restore_visible(self, *args: Any, **kwargs: Any) -> None:
        try:
            super().restore_visible(*args, **kwargs)
        except redis_py.exceptions.ResponseError as exc:
            if not is_full(exc):
                raise
            self._full("restore of unacked messages", exc)


class Channel(redis.Channel):
    QoS = QoS

    def _connparams(self, asynchronous: bool = False) -> Any:
        if self.connection is None or self.connection.client is None:
            raise redis_py.ConnectionError("the broker connection was closed")
        return super()._connparams(asynchronous)


class Transport(redis.Transport):
    Channel = Channel


def use_guarded_redis_transport() -> None:
    """Serve `redis://` and `rediss://` URLs with this transport. An alias rather than a
    `broker_transport` setting, so URLs keep their scheme (Flower's broker view reads it)."""
    for scheme in ("redis", "rediss"):
        TRANSPORT_ALIASES[scheme] = f"{__name__}:Transport"
