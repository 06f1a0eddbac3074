"""The Redis broker transport, with one guard against a crash on a lost connection.

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
"""

from __future__ import annotations

from typing import Any

import redis as redis_py
from kombu.transport import TRANSPORT_ALIASES, redis


class Channel(redis.Channel):
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
