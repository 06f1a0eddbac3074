"""Every Lua script askq runs in Redis. Each makes one multi-key change atomic.

Scripts return numbers as strings where they may be fractional: Redis truncates Lua
numbers in replies to integers.
"""

from __future__ import annotations

SUBMIT = """
-- KEYS: job, batch_jobs, batch_counts, counts, due, deadlines, thread_queue, batch_items
-- ARGV: job_id, record, now, deadline, has_batch, has_thread, batch_ttl, item_key
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
if ARGV[5] == '1' then
  -- a re-submitted item (same custom_id, or the same request again) is not run twice
  if redis.call('HSETNX', KEYS[8], ARGV[8], ARGV[1]) == 0 then return 0 end
  redis.call('EXPIRE', KEYS[8], ARGV[7])
end
redis.call('HSET', KEYS[1], 'version', 1, 'status', 'pending', 'record', ARGV[2],
           'next', 'askq.start')
redis.call('HINCRBY', KEYS[4], 'pending', 1)
if ARGV[5] == '1' then
  redis.call('RPUSH', KEYS[2], ARGV[1])
  redis.call('HINCRBY', KEYS[3], 'pending', 1)
  redis.call('EXPIRE', KEYS[2], ARGV[7])
  redis.call('EXPIRE', KEYS[3], ARGV[7])
end
redis.call('ZADD', KEYS[6], ARGV[4], ARGV[1])
local runnable = true
if ARGV[6] == '1' then
  -- jobs on one thread run one after another: only the head of its queue is due
  if redis.call('RPUSH', KEYS[7], ARGV[1]) > 1 then runnable = false end
end
if runnable then redis.call('ZADD', KEYS[5], ARGV[3], ARGV[1]) end
return 1
"""

RETRY = """
-- Run a failed job of a batch again under the same id (`askq batch --retry-failed`): a fresh
-- record, pending, due now (or queued behind its thread), no longer expiring.
-- KEYS: job, due, deadlines, counts, batch_counts, thread_queue, wake
-- ARGV: expected_version, record, old_status, now, deadline, job_id, has_thread
local v = redis.call('HGET', KEYS[1], 'version')
if v ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'version', tonumber(v) + 1, 'status', 'pending', 'record', ARGV[2],
           'next', 'askq.start')
redis.call('PERSIST', KEYS[1])
redis.call('HINCRBY', KEYS[4], ARGV[3], -1)
redis.call('HINCRBY', KEYS[4], 'pending', 1)
redis.call('HINCRBY', KEYS[5], ARGV[3], -1)
redis.call('HINCRBY', KEYS[5], 'pending', 1)
redis.call('ZADD', KEYS[3], ARGV[5], ARGV[6])
if ARGV[7] == '1' and redis.call('RPUSH', KEYS[6], ARGV[6]) > 1 then return 1 end
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[6])
redis.call('RPUSH', KEYS[7], '1')
redis.call('LTRIM', KEYS[7], 0, 63)
return 1
"""

TRANSITION = """
-- Compare-and-set of a job record on its version, with every index kept in step.
-- KEYS: job, due, deadlines, inflight, waiting, counts, batch_counts, thread_queue, wake,
--       job_latency
-- ARGV: 1 expected_version, 2 record, 3 old_status, 4 new_status, 5 next_task,
--       6 due ('' keep, '-' remove, else epoch s), 7 terminal, 8 ttl, 9 now,
--       10 has_batch, 11 has_thread, 12 max_inflight, 13 job_id,
--       14 latency bucket ('' when the job does not end here), 15 latency (s)
local v = redis.call('HGET', KEYS[1], 'version')
if v ~= ARGV[1] then return 0 end
local id = ARGV[13]
local now = ARGV[9]
local version = tonumber(v) + 1
redis.call('HSET', KEYS[1], 'version', version, 'record', ARGV[2], 'status', ARGV[4],
           'next', ARGV[5])
if ARGV[3] ~= ARGV[4] then
  redis.call('HINCRBY', KEYS[6], ARGV[3], -1)
  redis.call('HINCRBY', KEYS[6], ARGV[4], 1)
  if ARGV[10] == '1' then
    redis.call('HINCRBY', KEYS[7], ARGV[3], -1)
    redis.call('HINCRBY', KEYS[7], ARGV[4], 1)
  end
end
if ARGV[6] == '-' then
  redis.call('ZREM', KEYS[2], id)
elseif ARGV[6] ~= '' then
  redis.call('ZADD', KEYS[2], ARGV[6], id)
  -- a sleeping pump plans to look again within a second at most: wake it for anything
  -- due sooner, so a short poll delay is not stretched to the pump's idle wait
  if tonumber(ARGV[6]) <= tonumber(now) + 1 then redis.call('RPUSH', KEYS[9], '1') end
end
if ARGV[14] ~= '' then
  redis.call('HINCRBY', KEYS[10], ARGV[4] .. ' ' .. ARGV[14], 1)
  redis.call('HINCRBYFLOAT', KEYS[10], ARGV[4] .. ' sum', ARGV[15])
end
if ARGV[7] == '1' then
  redis.call('ZREM', KEYS[2], id)
  redis.call('ZREM', KEYS[3], id)
  redis.call('ZREM', KEYS[5], id)
  redis.call('HDEL', KEYS[1], 'ticket', 'next')
  redis.call('EXPIRE', KEYS[1], ARGV[8])
  if redis.call('ZREM', KEYS[4], id) == 1 then
    -- hand the freed slot straight to the longest waiter (FIFO, no thundering herd)
    local max = tonumber(ARGV[12])
    while redis.call('ZCARD', KEYS[4]) < max do
      local head = redis.call('ZRANGE', KEYS[5], 0, 0)
      if #head == 0 then break end
      redis.call('ZREM', KEYS[5], head[1])
      redis.call('ZADD', KEYS[4], now, head[1])
      redis.call('ZADD', KEYS[2], now, head[1])
      redis.call('RPUSH', KEYS[9], '1')
    end
  end
  if ARGV[11] == '1' then
    -- only the head of a thread's queue runs: when it ends, the next one is due; a job
    -- leaving from further back (cancelled while waiting) must not disturb the head
    local was_head = redis.call('LINDEX', KEYS[8], 0) == id
    redis.call('LREM', KEYS[8], 1, id)
    local head = redis.call('LINDEX', KEYS[8], 0)
    if was_head and head then
      redis.call('ZADD', KEYS[2], now, head)
      redis.call('RPUSH', KEYS[9], '1')
    end
  end
end
redis.call('LTRIM', KEYS[9], 0, 63)
return version
"""

CLAIM_DUE = """
-- Claim due jobs: re-score each to its lease end (so a lost message is retried by the
-- sweep) and give it a ticket that exactly one task message may take. A start is admitted
-- only with a free in-flight slot (taken here, FIFO behind `waiting`); without one the job
-- is parked in `waiting` and no message is published: past ASKQ_MAX_INFLIGHT a batch would
-- otherwise flood the queue with starts that can only park themselves, ahead of the polls
-- of the runs in flight (measured: docs/benchmarks.md, "admit").
-- A job past its deadline is published anyway: its start expires it.
-- KEYS: due, inflight, waiting, seq, deadlines
-- ARGV: now, limit, lease_until, job_prefix, max_inflight
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
  elseif task == 'askq.start' and not redis.call('ZSCORE', KEYS[2], id)
         and tonumber(redis.call('ZSCORE', KEYS[5], id) or '+inf') > tonumber(ARGV[1]) then
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

ACQUIRE_SLOT = """
-- Take one of max_inflight slots for a job, or queue it (FIFO) for the next free one.
-- KEYS: inflight, waiting, due, seq; ARGV: job_id, max_inflight, now
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 1 end
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
  local head = redis.call('ZRANGE', KEYS[2], 0, 0)
  if #head == 0 or head[1] == ARGV[1] then
    redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
    redis.call('ZREM', KEYS[2], ARGV[1])
    return 1
  end
end
if redis.call('ZSCORE', KEYS[2], ARGV[1]) == false then
  redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[4]), ARGV[1])
end
redis.call('ZREM', KEYS[3], ARGV[1])
return 0
"""

RECLAIM_SLOTS = """
-- Sweep: free slots held by jobs that are finished or gone, then promote waiters.
-- KEYS: inflight, waiting, due, wake; ARGV: job_prefix, max_inflight, now
local freed = 0
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local status = redis.call('HGET', ARGV[1] .. id, 'status')
  if (not status) or status == 'completed' or status == 'failed' or status == 'cancelled'
     or status == 'expired' or status == 'incomplete' then
    redis.call('ZREM', KEYS[1], id)
    freed = freed + 1
  end
end
local max = tonumber(ARGV[2])
while redis.call('ZCARD', KEYS[1]) < max do
  local head = redis.call('ZRANGE', KEYS[2], 0, 0)
  if #head == 0 then break end
  redis.call('ZREM', KEYS[2], head[1])
  redis.call('ZADD', KEYS[1], ARGV[3], head[1])
  redis.call('ZADD', KEYS[3], ARGV[3], head[1])
  redis.call('RPUSH', KEYS[4], '1')
end
return freed
"""

GCRA = """
-- Global request budget (generic cell rate algorithm). Returns the wait in ms, as a
-- string; '0' means the requests may go now. force=1 spends the budget even when
-- exhausted (a follow-up request that must not be split from its first one).
-- KEYS: rate; ARGV: now_ms, interval_ms, burst, quantity, force
local now = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + tonumber(ARGV[4]) * interval
local allow_at = new_tat - tonumber(ARGV[3]) * interval
if ARGV[5] ~= '1' and allow_at > now then return tostring(allow_at - now) end
redis.call('SET', KEYS[1], tostring(new_tat), 'PX', math.ceil(new_tat - now + 1000))
return '0'
"""

TAKE_TICKET = """
-- The ticket names the task it was published for: a late duplicate of another task (a
-- start arriving after the job moved on to polling) must not use up the poll's ticket.
-- KEYS: job; ARGV: task
if redis.call('HGET', KEYS[1], 'ticket') == ARGV[1] then
  redis.call('HDEL', KEYS[1], 'ticket')
  return 1
end
return 0
"""

TAKE_CANCEL = """
-- Exactly one task acts on a cancel request: `requested` becomes `taken:<when>`. A take
-- older than the lease (its worker died) may be taken again.
-- KEYS: job; ARGV: now, stale_before
local flag = redis.call('HGET', KEYS[1], 'cancel')
if not flag then return 0 end
local taken_at = tonumber(string.match(flag, '^taken:(.+)$') or '')
if flag == 'requested' or (taken_at and taken_at < tonumber(ARGV[2])) then
  redis.call('HSET', KEYS[1], 'cancel', 'taken:' .. ARGV[1])
  return 1
end
return 0
"""

WEBHOOK_POKE = """
-- A verified provider webhook says a run, response or session changed: make its job's poll
-- due now. Never calls the API; a repeated delivery (same webhook-id) does nothing.
-- KEYS: webhook_seen, run_job, due, wake, webhook_events, webhook_early
-- ARGV: job_prefix, now, seen_ttl_s, early_ttl_s
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[3]) then
  redis.call('HINCRBY', KEYS[5], 'duplicate', 1)
  return 'duplicate'
end
local id = redis.call('GET', KEYS[2])
if not id then
  -- not ours, or ours but not recorded yet: INDEX_RUN pokes the job when it records the id
  redis.call('SET', KEYS[6], '1', 'EX', ARGV[4])
  redis.call('HINCRBY', KEYS[5], 'unmatched', 1)
  return 'unmatched'
end
redis.call('HINCRBY', KEYS[5], 'matched', 1)
-- only a job waiting for its next look is brought forward: a start keeps its admission
-- order, a job acting on tools or finished has nothing to look at
if redis.call('HGET', ARGV[1] .. id, 'next') == 'askq.poll' then
  redis.call('ZADD', KEYS[3], 'LT', ARGV[2], id)
  redis.call('RPUSH', KEYS[4], '1')
  redis.call('LTRIM', KEYS[4], 0, 63)
end
return 'matched'
"""

INDEX_RUN = """
-- A job recorded the id of its run, response or session: index it for webhooks, and poke
-- the job now if a webhook named that id before it was recorded.
-- KEYS: run_job, webhook_early, due, wake; ARGV: job_id, ttl_s, now, job_prefix
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
if redis.call('DEL', KEYS[2]) == 1
   and redis.call('HGET', ARGV[4] .. ARGV[1], 'next') == 'askq.poll' then
  redis.call('ZADD', KEYS[3], 'LT', ARGV[3], ARGV[1])
  redis.call('RPUSH', KEYS[4], '1')
  redis.call('LTRIM', KEYS[4], 0, 63)
  return 1
end
return 0
"""
