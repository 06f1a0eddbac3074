"""The Redis side of provider webhooks: which job owns a remote id, and poking that job.

A webhook names a response (Responses) or a session (Agents); the job that recorded that id
is made due now by one Lua script, so its next poll comes at once instead of at the slow
safety-net interval. The receiver never calls the API: the poll does, as always, so a forged
or replayed event can at worst cause one early look.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import redis

from worker import lua
from worker.keys import Keys
from worker.settings import Settings

SEEN_TTL_S = 3 * 24 * 3600
"""How long a webhook-id is remembered: OpenAI retries a delivery for up to three days."""

EARLY_TTL_S = 600
"""How long an unmatched id waits for its job to record it (a start takes seconds)."""


def poke_keys(keys: Keys, webhook_id: str, remote_id: str) -> list[str]:
    return [
        keys.webhook_seen(webhook_id),
        keys.run_job(remote_id),
        keys.due,
        keys.wake,
        keys.webhook_events,
        keys.webhook_early(remote_id),
    ]


def poke_args(keys: Keys) -> list[Any]:
    return [keys.job_prefix, SEEN_TTL_S, EARLY_TTL_S]


class RunIndex:
    """Written by the worker each time a job records a new remote id (webhooks on only)."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self.keys = Keys(settings.key_prefix)
        self.ttl_s = int(settings.job_timeout_s + settings.lease_s) + 1
        self._index = client.register_script(lua.INDEX_RUN)

    def record(self, job_id: str, remote_ids: Iterable[str], now: float) -> None:
        k = self.keys
        for remote_id in remote_ids:
            self._index(
                keys=[k.run_job(remote_id), k.webhook_early(remote_id), k.due, k.wake],
                args=[job_id, self.ttl_s, repr(now), k.job_prefix],
            )
