"""`celery -A bench.variant_app worker`: the askq worker with experimental changes applied,
named in BENCH_VARIANT (comma-separated), to measure what a proposed patch would save
before proposing it. Nothing here is used by askq itself.

- `noevents`: Celery task events off (`worker_send_task_events`, `task_send_sent_event`).
- `nosent`: only the task-sent event off (the pump's publishes), worker task events kept.
- `nocount`: no per-request HINCRBY of `askq:api-requests` (Runtime.count_request).
- `admit`: a due start is published only when an in-flight slot is free (see below).
"""

from __future__ import annotations

import os

from worker.application import app
from worker.runtime import Runtime

VARIANTS = {v.strip() for v in os.environ.get("BENCH_VARIANT", "").split(",") if v.strip()}

if "noevents" in VARIANTS:
    app.conf.worker_send_task_events = False
    app.conf.task_send_sent_event = False

if "nosent" in VARIANTS:
    # Flower still sees every task (received/started/succeeded come from the worker); only
    # the "sent" event the pump emits per published message goes
    app.conf.task_send_sent_event = False

if "nocount" in VARIANTS:

    def _no_count(self: Runtime, route: str, status: int) -> None:
        return None

    Runtime.count_request = _no_count  # type: ignore[method-assign]

__all__ = ["app"]


# -- `admit`: hold back starts with no free in-flight slot at claim time -------------------
# Today every due start is published; past ASKQ_MAX_INFLIGHT the task finds no slot and
# parks the job in `waiting`. A 3,000-job batch thus costs ~2,700 wasted start tasks up front,
# and polls of the running jobs queue behind them. This claim script admits a start only with
# a slot (taken at claim time, FIFO with `waiting`) and parks the others without a message.
CLAIM_DUE_ADMIT = """
-- KEYS: due, inflight, waiting, seq; ARGV: now, limit, lease_until, job_prefix, max_inflight
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
local out = {}
local max = tonumber(ARGV[5])
for _, id in ipairs(ids) do
  local key = ARGV[4] .. id
  local task = redis.call('HGET', key, 'next')
  local publish = true
  if (not task) or task == '' then
    redis.call('ZREM', KEYS[1], id)
    publish = false
  elseif task == 'askq.start' and not redis.call('ZSCORE', KEYS[2], id) then
    local head = redis.call('ZRANGE', KEYS[3], 0, 0)
    if redis.call('ZCARD', KEYS[2]) < max and (#head == 0 or head[1] == id) then
      redis.call('ZADD', KEYS[2], ARGV[1], id)
      redis.call('ZREM', KEYS[3], id)
    else
      if redis.call('ZSCORE', KEYS[3], id) == false then
        redis.call('ZADD', KEYS[3], redis.call('INCR', KEYS[4]), id)
      end
      redis.call('ZREM', KEYS[1], id)
      publish = false
    end
  end
  if publish then
    redis.call('ZADD', KEYS[1], ARGV[3], id)
    redis.call('HSET', key, 'ticket', task)
    out[#out + 1] = id
    out[#out + 1] = task
  end
end
return out
"""

if "admit" in VARIANTS:
    from worker.store import Claim, JobStore, text

    def _claim_due(self: JobStore, now: float, limit: int) -> list[Claim]:
        k = self.keys
        script = self.__dict__.setdefault(
            "_claim_admit", self.redis.register_script(CLAIM_DUE_ADMIT)
        )
        raw = self._call(
            lambda: script(
                keys=[k.due, k.inflight, k.waiting, k.seq],
                args=[
                    repr(now),
                    limit,
                    repr(now + self.settings.lease_s),
                    k.job_prefix,
                    self.settings.max_inflight,
                ],
            )
        )
        return [Claim(text(raw[i]), text(raw[i + 1])) for i in range(0, len(raw), 2)]

    JobStore.claim_due = _claim_due  # type: ignore[method-assign]
