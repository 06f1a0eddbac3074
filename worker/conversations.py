"""Whether the Responses server keeps Conversations (ASKQ_RESPONSES_CONVERSATIONS=auto).

Servers that speak the Responses API do not all serve `/v1/conversations` (vLLM serves
`/v1/responses` only; LiteLLM bridges responses over chat completions): the first 404 to
`POST /conversations` switches every worker to `previous_response_id` chains, remembered in
Redis for a day so a server that gains conversations is tried again.
"""

from __future__ import annotations

import logging
import time

import redis

from worker.keys import Keys
from worker.settings import Settings

log = logging.getLogger("askq")

REMEMBER_S = 24 * 3600
CACHE_S = 5.0
"""Each worker process re-reads the shared answer at most this often."""


class ConversationSwitch:
    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self.mode: str = settings.responses_conversations
        self.redis = client
        self.key = Keys(settings.key_prefix).no_conversations
        self._known: tuple[float, bool] | None = None

    def available(self) -> bool:
        if self.mode != "auto":
            return self.mode == "on"
        now = time.monotonic()
        if self._known is not None and now - self._known[0] < CACHE_S:
            return self._known[1]
        try:
            available = not self.redis.exists(self.key)
        except redis.RedisError:
            available = True  # Redis away: the start itself will fail and retry
        self._known = (now, available)
        return available

    def missing(self) -> None:
        log.warning(
            "the Responses server has no /conversations (404): jobs chain responses with "
            "previous_response_id for the next %d h (ASKQ_RESPONSES_CONVERSATIONS=auto)",
            REMEMBER_S // 3600,
        )
        self._known = (time.monotonic(), False)
        try:
            self.redis.set(self.key, "404", ex=REMEMBER_S)
        except redis.RedisError as exc:
            log.warning("cannot remember the missing /conversations (%s)", exc)
