"""Every Lua script askq runs in Redis. Each makes one multi-key change atomic.

Scripts return numbers as strings where they may be fractional: Redis truncates Lua
numbers in replies to integers.

Two rules hold for every script that changes state:
- **One clock.** Times that compare across processes (leases, due times, deadlines, the rate
  budget, heartbeats) are read from Redis (`TIME`) inside the script, never taken from the
  caller's clock: a worker whose clock is off by minutes neither re-dispatches others' jobs
  nor spends the budget twice.
- **Safe to send twice.** redis-py re-sends a command after a timeout or a dropped
  connection, even when the first one ran. Each script either is idempotent by nature or
  takes a request id and answers a repeat with the first attempt's outcome.
"""

from __future__ import annotations

from worker.keys import POLL_LATENESS_BUCKETS

SERVER_NOW = """
local function server_now()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
"""

SUBMIT = """
-- KEYS: job, batch_jobs, batch_counts, counts, due, deadlines, thread_queue, batch_items
-- ARGV: job_id, record, now, deadline, has_batch, has_thread, batch_ttl, item_key
-- Job ids are fresh for every submission, so a job that exists is this same call re-sent.
if redis.call('EXISTS', KEYS[1]) == 1 then return 1 end
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

RETRY = (
    SERVER_NOW
    + """
-- Run a failed job of a batch again under the same id (`askq batch --retry-failed`): a fresh
-- record, pending, due now (or queued behind its thread), no longer expiring.
-- KEYS: job, due, deadlines, counts, batch_counts, thread_queue, wake
-- ARGV: expected_version, record, old_status, deadline, job_id, has_thread
local v = redis.call('HGET', KEYS[1], 'version')
if v ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'version', tonumber(v) + 1, 'status', 'pending', 'record', ARGV[2],
           'next', 'askq.start')
redis.call('PERSIST', KEYS[1])
redis.call('HINCRBY', KEYS[4], ARGV[3], -1)
redis.call('HINCRBY', KEYS[4], 'pending', 1)
redis.call('HINCRBY', KEYS[5], ARGV[3], -1)
redis.call('HINCRBY', KEYS[5], 'pending', 1)
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[5])
if ARGV[6] == '1' and redis.call('RPUSH', KEYS[6], ARGV[5]) > 1 then return 1 end
redis.call('ZADD', KEYS[2], server_now(), ARGV[5])
redis.call('RPUSH', KEYS[7], '1')
redis.call('LTRIM', KEYS[7], 0, 63)
return 1
"""
)

CALLBACKS_ON_END = """
-- The outbox (worker/outbox.py): the intent to call back is written by the same script that
-- ends a job, so a crash may delay a callback but never lose it, and one end writes it once.
-- A callback's id names what it reports: <job id>.<version>.<kind> for a job's end,
-- <batch id>.<round>.<kind> for a batch's (a batch ends again after --retry-failed).
local LIVE_STATUSES = {'pending', 'running', 'requires_action', 'cancelling'}

local function outbox_add(spec, outbox, wake, base, subject, event, targets, payload, now)
  local ids = {}
  for _, kind in ipairs({'task', 'webhook'}) do
    local target = targets[kind]
    if target and target ~= '' then
      local cb = base .. '.' .. kind
      local key = spec.prefix .. cb
      redis.call('HSET', key, 'kind', kind, 'target', target, 'event', event,
                 'subject', subject, 'state', 'pending', 'attempts', 0,
                 'created_at', tostring(now))
      redis.call('HSET', key, unpack(payload))
      redis.call('EXPIRE', key, spec.ttl)
      redis.call('ZADD', outbox, now, cb)
      ids[#ids + 1] = cb
    end
  end
  if #ids > 0 then redis.call('RPUSH', wake, '1') end
  return table.concat(ids, ',')
end

local function batch_live(counts)
  local live = 0
  for _, n in ipairs(redis.call('HMGET', counts, unpack(LIVE_STATUSES))) do
    live = live + tonumber(n or '0')
  end
  return live
end

local function batch_done(spec, batch_cb, counts, outbox, wake, batch_id, now)
  local f = redis.call('HMGET', batch_cb, 'task', 'webhook', 'name', 'created_at', 'first_at')
  local round = redis.call('HINCRBY', batch_cb, 'round', 1)
  local summary = {'counts', cjson.encode(redis.call('HGETALL', counts)), 'name', f[3] or '',
                   'batch_created_at', f[4] or '', 'first_at', f[5] or tostring(now),
                   'last_at', tostring(now)}
  local ids = outbox_add(spec, outbox, wake, batch_id .. '.' .. round, batch_id, 'batch.done',
                         {task = f[1], webhook = f[2]}, summary, now)
  redis.call('HSET', batch_cb, 'ended_open', '0', 'callbacks', ids)
  redis.call('HDEL', batch_cb, 'first_at')
end

-- spec (JSON from JobStore.transition): prefix, ttl, and when they apply task, webhook,
-- payload (the result record), batch (the batch id)
local function on_job_end(spec, job, batch_cb, counts, outbox, wake, id, version, now)
  if spec.task or spec.webhook then
    local ids = outbox_add(spec, outbox, wake, id .. '.' .. version, id, 'job.done',
                           {task = spec.task, webhook = spec.webhook},
                           {'payload', spec.payload}, now)
    redis.call('HSET', job, 'callbacks', ids)
  end
  if spec.batch and redis.call('EXISTS', batch_cb) == 1 then
    redis.call('HSETNX', batch_cb, 'first_at', tostring(now))
    if batch_live(counts) == 0 then
      -- the last job ended: the batch is done, unless a submission is still adding jobs
      -- (then its end, SEAL_BATCH, decides)
      if redis.call('HGET', batch_cb, 'sealed') == '1' then
        batch_done(spec, batch_cb, counts, outbox, wake, spec.batch, now)
      else
        redis.call('HSET', batch_cb, 'ended_open', '1')
      end
    end
  end
end
"""

TRANSITION = (
    SERVER_NOW
    + CALLBACKS_ON_END
    + """
-- Compare-and-set of a job record on its version, fenced by the claim's epoch, with every
-- index kept in step. Returns the new version; 0 when the record moved on (stale view);
-- -1 when the caller's claim was taken over (it must stop: another task owns the job).
-- KEYS: job, due, deadlines, inflight, waiting, counts, batch_counts, thread_queue, wake,
--       job_latency, batch_ended, outbox, batch_callbacks
-- ARGV: 1 expected_version, 2 record, 3 old_status, 4 new_status, 5 next_task,
--       6 due ('' keep, '-' remove, else epoch s), 7 terminal, 8 ttl, 9 fence (epoch, ''
--       for none), 10 has_batch, 11 has_thread, 12 max_inflight, 13 job_id,
--       14 latency bucket ('' when the job does not end here), 15 latency (s),
--       16 request id, 17 release ('1': the task is done with the job),
--       18 callbacks spec (JSON; '' when the job does not end here or has none)
if redis.call('HGET', KEYS[1], 'req') == ARGV[16] then
  return tonumber(redis.call('HGET', KEYS[1], 'version'))  -- this same save, re-sent
end
if ARGV[9] ~= '' and redis.call('HGET', KEYS[1], 'epoch') ~= ARGV[9] then return -1 end
local v = redis.call('HGET', KEYS[1], 'version')
if v ~= ARGV[1] then return 0 end
local id = ARGV[13]
local now = server_now()
local version = tonumber(v) + 1
redis.call('HSET', KEYS[1], 'version', version, 'record', ARGV[2], 'status', ARGV[4],
           'next', ARGV[5], 'req', ARGV[16])
if ARGV[17] == '1' then redis.call('HDEL', KEYS[1], 'owner') end
if ARGV[3] ~= ARGV[4] then
  redis.call('HINCRBY', KEYS[6], ARGV[3], -1)
  redis.call('HINCRBY', KEYS[6], ARGV[4], 1)
  if ARGV[10] == '1' then
    redis.call('HINCRBY', KEYS[7], ARGV[3], -1)
    redis.call('HINCRBY', KEYS[7], ARGV[4], 1)
  end
end
local due = ARGV[6]
if redis.call('HDEL', KEYS[1], 'poked') == 1 and ARGV[5] == 'askq.poll'
   and due ~= '' and due ~= '-' and tonumber(due) > now then
  due = tostring(now)  -- a webhook came while this poll was under way: look again now
end
if due == '-' then
  redis.call('ZREM', KEYS[2], id)
elseif due ~= '' then
  redis.call('ZADD', KEYS[2], due, id)
  redis.call('HSET', KEYS[1], 'due_at', due)
  -- a sleeping pump plans to look again within a second at most: wake it for anything
  -- due sooner, so a short poll delay is not stretched to the pump's idle wait
  if tonumber(due) <= now + 1 then redis.call('RPUSH', KEYS[9], '1') end
end
if ARGV[14] ~= '' then
  redis.call('HINCRBY', KEYS[10], ARGV[4] .. ' ' .. ARGV[14], 1)
  redis.call('HINCRBYFLOAT', KEYS[10], ARGV[4] .. ' sum', ARGV[15])
end
if ARGV[14] ~= '' and ARGV[10] == '1' then
  -- a job of a batch ends: `askq results --follow` blocks on this stream (one entry per end,
  -- finishing order); the cap only bites past a million ends, and a follower fills gaps
  -- from the batch's records
  redis.call('XADD', KEYS[11], 'MAXLEN', '~', 1000000, '*', 'job', id)
  redis.call('EXPIRE', KEYS[11], ARGV[8])
end
if ARGV[7] == '1' then
  -- Extension point: whatever must happen exactly once when a job ends (an outbox of
  -- callbacks, a follow stream) belongs here, in the same atomic step.
  if ARGV[18] ~= '' then
    on_job_end(cjson.decode(ARGV[18]), KEYS[1], KEYS[13], KEYS[7], KEYS[12], KEYS[9], id,
               version, now)
  end
  redis.call('ZREM', KEYS[2], id)
  redis.call('ZREM', KEYS[3], id)
  redis.call('ZREM', KEYS[5], id)
  redis.call('HDEL', KEYS[1], 'ticket', 'next', 'owner')
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
)

CLAIM_DUE = (
    SERVER_NOW
    + """
-- Claim due jobs: re-score each to its lease end (so a lost message is retried) and give
-- it a ticket that exactly one task message may take; each publication starts a new epoch,
-- which fences any task still holding an older claim.
-- A due entry whose task is still running on a live worker (its heartbeat is fresh and lists
-- the job) is not published again: its held lease is renewed instead, for at most task_bound
-- seconds after the take (past that the task is stuck and the job goes to another worker).
-- A start is admitted only with a free in-flight slot (taken here, FIFO behind `waiting`);
-- without one the job is parked in `waiting` and no message is published: past
-- ASKQ_MAX_INFLIGHT a batch would otherwise flood the queue with starts that can only park
-- themselves, ahead of the polls of the runs in flight (docs/benchmarks.md, "admit").
-- A job past its deadline is published anyway: its start expires it.
-- A due entry whose message was published but not taken yet (its ticket is still there)
-- while that task's queue still holds messages is waiting behind a backlog, not lost: its
-- lease is renewed and nothing is published, so an overloaded deployment does not pile
-- duplicates onto its own backlog. Past queued_bound seconds after its publication it is
-- published again anyway (a message lost while the queue stayed busy): later, never lost.
-- Back-pressure: while a task's queue already holds `high_water` messages, its due entries
-- stay due (unclaimed, counted as held): they wait in the due set rather than the queue, and
-- the pump packs them into fewer messages once the queue drains.
-- The claimed jobs join the claiming worker's list (its heartbeat keeps them there while it
-- publishes): if it dies before publishing, the sweep moves them on at once.
-- Returns {server now, held, id, task, id, task, ...}; a re-sent call returns the first
-- reply.
-- KEYS: due, inflight, waiting, seq, deadlines, workers, reply
-- ARGV: 1 limit, 2 lease_s, 3 job_prefix, 4 max_inflight, 5 dead_after_s, 6 task_bound_s,
--       7 worker_prefix, 8 worker_suffix, 9 worker id, 10 held_lease_s,
--       11 broker queue prefix (a queue's list is this + the task name), 12 queued_bound_s,
--       13 high_water (messages waiting in a task's queue before its entries are held)
local cached = redis.call('GET', KEYS[7])
if cached then return cjson.decode(cached) end
local now = server_now()
local limit = tonumber(ARGV[1])
local out = {tostring(now), 0}
local max = tonumber(ARGV[4])
local lease_until = now + tonumber(ARGV[2])
local waiting = {}
local function backlog(task)
  if not waiting[task] then waiting[task] = redis.call('LLEN', ARGV[11] .. task) end
  return waiting[task]
end
-- Held entries stay due and are skipped (offset), so the entries behind them (a poll behind
-- a backlog of starts) are still reached; at most 4 x limit entries are read a call.
local offset, scanned = 0, 0
while (#out - 2) / 2 < limit and scanned < 4 * limit do
  local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', offset,
                         limit - (#out - 2) / 2)
  if #ids == 0 then break end
  scanned = scanned + #ids
  for _, id in ipairs(ids) do
    local key = ARGV[3] .. id
    local f = redis.call('HMGET', key, 'next', 'ticket', 'owner', 'taken_at', 'published_at')
    local task = f[1]
    local publish = true
    if (not task) or task == '' then
      redis.call('ZREM', KEYS[1], id)
      publish = false
    elseif f[2] and now - tonumber(f[5] or '0') < tonumber(ARGV[12])
           and redis.call('LLEN', ARGV[11] .. f[2]) > 0 then
      redis.call('ZADD', KEYS[1], lease_until, id)
      publish = false
    elseif (not f[2]) and f[3] then
      local beat = redis.call('ZSCORE', KEYS[6], f[3])
      if beat and tonumber(beat) > now - tonumber(ARGV[5])
         and now - tonumber(f[4] or '0') < tonumber(ARGV[6])
         and redis.call('SISMEMBER', ARGV[7] .. f[3] .. ARGV[8], id) == 1 then
        redis.call('ZADD', KEYS[1], now + tonumber(ARGV[10]), id)
        publish = false
      end
    end
    if publish and backlog(task) >= tonumber(ARGV[13]) then
      out[2] = out[2] + 1
      offset = offset + 1
      publish = false
    end
    if publish and task == 'askq.start' and not redis.call('ZSCORE', KEYS[2], id)
       and tonumber(redis.call('ZSCORE', KEYS[5], id) or '+inf') > now then
      local head = redis.call('ZRANGE', KEYS[3], 0, 0)
      if redis.call('ZCARD', KEYS[2]) < max and (#head == 0 or head[1] == id) then
        redis.call('ZADD', KEYS[2], now, id)
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
      redis.call('ZADD', KEYS[1], lease_until, id)
      redis.call('HSET', key, 'ticket', task, 'published_at', tostring(now))
      redis.call('HINCRBY', key, 'epoch', 1)
      redis.call('HDEL', key, 'owner')
      redis.call('SADD', ARGV[7] .. ARGV[9] .. ARGV[8], id)
      out[#out + 1] = id
      out[#out + 1] = task
    end
  end
end
if #out > 2 then redis.call('SET', KEYS[7], cjson.encode(out), 'PX', 60000) end
return out
"""
)

ACQUIRE_SLOT = (
    SERVER_NOW
    + """
-- Take one of max_inflight slots for a job, or queue it (FIFO) for the next free one.
-- Idempotent: a job holding a slot gets it again; a queued job stays queued.
-- KEYS: inflight, waiting, due, seq; ARGV: job_id, max_inflight
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 1 end
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
  local head = redis.call('ZRANGE', KEYS[2], 0, 0)
  if #head == 0 or head[1] == ARGV[1] then
    redis.call('ZADD', KEYS[1], server_now(), ARGV[1])
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
)

RECLAIM_SLOTS = (
    SERVER_NOW
    + """
-- Sweep: free slots held by jobs that are finished or gone, then promote waiters.
-- A job's ending frees its slot in the same script (TRANSITION), so a slot left behind is
-- rare (a job record deleted or expired under it): each slot is looked at once every
-- recheck_s (its score is when it was taken or last looked at), at most `limit` a sweep,
-- so a sweep costs what changed, not one read per job in flight.
-- KEYS: inflight, waiting, due, wake; ARGV: job_prefix, max_inflight, recheck_s, limit
local now = server_now()
local freed = 0
local stale = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[3]),
                         'LIMIT', 0, tonumber(ARGV[4]))
for _, id in ipairs(stale) do
  local status = redis.call('HGET', ARGV[1] .. id, 'status')
  if (not status) or status == 'completed' or status == 'failed' or status == 'cancelled'
     or status == 'expired' or status == 'incomplete' then
    redis.call('ZREM', KEYS[1], id)
    freed = freed + 1
  else
    redis.call('ZADD', KEYS[1], 'XX', now, id)
  end
end
local max = tonumber(ARGV[2])
while redis.call('ZCARD', KEYS[1]) < max do
  local head = redis.call('ZRANGE', KEYS[2], 0, 0)
  if #head == 0 then break end
  redis.call('ZREM', KEYS[2], head[1])
  redis.call('ZADD', KEYS[1], now, head[1])
  redis.call('ZADD', KEYS[3], now, head[1])
  redis.call('RPUSH', KEYS[4], '1')
end
return freed
"""
)

EXPIRE_OVERDUE = (
    SERVER_NOW
    + """
-- Sweep: make jobs past their deadline due now (their own task expires them and cancels the
-- remote run), and prune deadline entries of jobs that ended or vanished, which would
-- otherwise fill every sweep's window and starve real timeouts. Returns {due, pruned}.
-- KEYS: deadlines, due, wake; ARGV: job_prefix, limit
local now = server_now()
local due, pruned = 0, 0
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, ARGV[2])) do
  local next_task = redis.call('HGET', ARGV[1] .. id, 'next')
  if (not next_task) or next_task == '' then
    redis.call('ZREM', KEYS[1], id)
    pruned = pruned + 1
  else
    redis.call('ZADD', KEYS[2], 'LT', now, id)
    redis.call('ZADD', KEYS[2], 'NX', now, id)
    due = due + 1
  end
end
if due > 0 then
  redis.call('RPUSH', KEYS[3], '1')
  redis.call('LTRIM', KEYS[3], 0, 63)
end
return {due, pruned}
"""
)

GCRA = (
    SERVER_NOW
    + """
-- Global request budget (generic cell rate algorithm), on the server's clock. Returns the
-- wait in ms, as a string; '0' means the requests may go now. force=1 spends the budget
-- even when exhausted (a follow-up request that must not be split from its first one).
-- The value is `tat|request id`: a re-sent spend that already went through is not spent twice.
-- KEYS: rate; ARGV: interval_ms, burst, quantity, force, request id
local now = server_now() * 1000
local interval = tonumber(ARGV[1])
local raw = redis.call('GET', KEYS[1])
local tat = now
if raw then
  local stored, req = string.match(raw, '^([^|]+)|(.*)$')
  if req == ARGV[5] then return '0' end
  tat = tonumber(stored or raw) or now
end
if tat < now then tat = now end
local new_tat = tat + tonumber(ARGV[3]) * interval
local allow_at = new_tat - tonumber(ARGV[2]) * interval
if ARGV[4] ~= '1' and allow_at > now then return tostring(allow_at - now) end
redis.call('SET', KEYS[1], tostring(new_tat) .. '|' .. ARGV[5], 'PX',
           math.ceil(new_tat - now + 1000))
return '0'
"""
)

TAKE_TICKET = (
    SERVER_NOW
    + """
-- The ticket names the task it was published for: a late duplicate of another task (a
-- start arriving after the job moved on to polling) must not use up the poll's ticket.
-- The taker becomes the job's owner for this epoch; its heartbeat keeps the lease alive.
-- The job joins the worker's list at once (the next heartbeat keeps it there), so a dead
-- worker's heartbeat-watchers find it even before its next beat; and its lease becomes the
-- short one of a held task (renewed while the worker lists it), so a task that ends without
-- a save (Redis full or away) leaves its job a few seconds behind, not a whole lease.
-- A poll's lateness (taken now, due at `due_at`) is counted in the poll-lateness histogram.
-- Returns the epoch (the fencing token of every save this task makes), or 0.
-- KEYS: job, worker_jobs, due, poll_lateness
-- ARGV: task, worker id, request id, job id, held lease (s)
local f = redis.call('HMGET', KEYS[1], 'ticket', 'taker', 'epoch', 'due_at')
if f[1] == ARGV[1] then
  local now = server_now()
  if ARGV[1] == 'askq.poll' and f[4] then
    local late = now - tonumber(f[4])
    local bucket = '+Inf'
    for _, bound in ipairs({LATENESS_BOUNDS}) do
      if late <= bound then bucket = tostring(bound) break end
    end
    redis.call('HINCRBY', KEYS[4], bucket, 1)
  end
  -- a webhook poke before this take is seen by this task's look: it is used up here
  redis.call('HDEL', KEYS[1], 'ticket', 'poked')
  redis.call('HSET', KEYS[1], 'owner', ARGV[2], 'taken_at', tostring(now), 'taker', ARGV[3])
  redis.call('SADD', KEYS[2], ARGV[4])
  redis.call('ZADD', KEYS[3], 'XX', now + tonumber(ARGV[5]), ARGV[4])
  return tonumber(f[3] or '0')
end
if f[2] == ARGV[3] then return tonumber(f[3] or '0') end  -- this same take, re-sent
return 0
""".replace("LATENESS_BOUNDS", ", ".join(repr(b) for b in POLL_LATENESS_BUCKETS))
)

TAKE_CANCEL = (
    SERVER_NOW
    + """
-- Exactly one task acts on a cancel request: `requested` becomes `taken:<when>:<request>`.
-- A take older than the lease (its worker died) may be taken again.
-- KEYS: job; ARGV: lease_s, request id
local flag = redis.call('HGET', KEYS[1], 'cancel')
if not flag then return 0 end
local when, req = string.match(flag, '^taken:([^:]+):(.*)$')
if req == ARGV[2] then return 1 end
local now = server_now()
if flag == 'requested' or (when and tonumber(when) < now - tonumber(ARGV[1])) then
  redis.call('HSET', KEYS[1], 'cancel', 'taken:' .. tostring(now) .. ':' .. ARGV[2])
  return 1
end
return 0
"""
)

WEBHOOK_POKE = (
    SERVER_NOW
    + """
-- A verified provider webhook says a run, response or session changed: make its job's poll
-- due now. Never calls the API; a repeated delivery (same webhook-id) does nothing.
-- Its "now" is the Redis server's: the receiver's host clock may be off by minutes.
-- KEYS: webhook_seen, run_job, due, wake, webhook_events, webhook_early
-- ARGV: job_prefix, seen_ttl_s, early_ttl_s
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[2]) then
  redis.call('HINCRBY', KEYS[5], 'duplicate', 1)
  return 'duplicate'
end
local id = redis.call('GET', KEYS[2])
if not id then
  -- not ours, or ours but not recorded yet: INDEX_RUN pokes the job when it records the id
  redis.call('SET', KEYS[6], '1', 'EX', ARGV[3])
  redis.call('HINCRBY', KEYS[5], 'unmatched', 1)
  return 'unmatched'
end
redis.call('HINCRBY', KEYS[5], 'matched', 1)
-- only a job waiting for its next look is brought forward: a start keeps its admission
-- order, a job acting on tools or finished has nothing to look at
if redis.call('HGET', ARGV[1] .. id, 'next') == 'askq.poll' then
  -- `poked` survives a poll already under way (its look may predate the change): that
  -- poll's save then keeps the job due now instead of writing its later due time over it
  redis.call('HSET', ARGV[1] .. id, 'poked', '1')
  redis.call('ZADD', KEYS[3], 'LT', server_now(), id)
  redis.call('RPUSH', KEYS[4], '1')
  redis.call('LTRIM', KEYS[4], 0, 63)
end
return 'matched'
"""
)

INDEX_RUN = """
-- A job recorded the id of its run, response or session: index it for webhooks, and poke
-- the job now if a webhook named that id before it was recorded.
-- KEYS: run_job, webhook_early, due, wake; ARGV: job_id, ttl_s, now, job_prefix
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
if redis.call('DEL', KEYS[2]) == 1
   and redis.call('HGET', ARGV[4] .. ARGV[1], 'next') == 'askq.poll' then
  redis.call('HSET', ARGV[4] .. ARGV[1], 'poked', '1')
  redis.call('ZADD', KEYS[3], 'LT', ARGV[3], ARGV[1])
  redis.call('RPUSH', KEYS[4], '1')
  redis.call('LTRIM', KEYS[4], 0, 63)
  return 1
end
return 0
"""


COLD_START = """
-- A run of an assistant or model nothing has been learned about yet started. The first few
-- such runs (scouts) are polled as usual; the others' first looks are deferred and listed,
-- so that the duration the scouts learn can re-target them (RETARGET_COLD). A re-sent call
-- counts one scout too many: one deferral fewer, no harm. Returns 1 when deferred.
-- KEYS: cold_scouts, cold_looks; ARGV: scouts, ttl_s, member (`id|started|deferred`),
--       earliest look (epoch s: the server's hint, or the usual first look)
local n = redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
if n <= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[2])
return 1
"""

RETARGET_COLD = (
    SERVER_NOW
    + """
-- The first run of an assistant or model ended: its duration is learned. Every deferred
-- first look of that key that is still scheduled (the job waits for it: no message out, no
-- task on it, its due time the deferred one) is moved to started + the learned first look,
-- never before its earliest allowed look (the server's hint) nor before now. Returns how
-- many moved. KEYS: cold_looks, due, wake, cold_scouts; ARGV: job_prefix, first_look_s
local now = server_now()
local moved = 0
local items = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
for i = 1, #items, 2 do
  local id, started, deferred = string.match(items[i], '^(.*)|([^|]+)|([^|]+)$')
  local due = id and redis.call('ZSCORE', KEYS[2], id)
  if due and math.abs(tonumber(due) - tonumber(deferred)) < 0.001 then
    local f = redis.call('HMGET', ARGV[1] .. id, 'next', 'ticket', 'owner')
    if f[1] == 'askq.poll' and not f[2] and not f[3] then
      local target = math.max(now, tonumber(items[i + 1]), tonumber(started) + tonumber(ARGV[2]))
      redis.call('ZADD', KEYS[2], target, id)
      moved = moved + 1
    end
  end
end
redis.call('DEL', KEYS[1], KEYS[4])
if moved > 0 then
  redis.call('RPUSH', KEYS[3], '1')
  redis.call('LTRIM', KEYS[3], 0, 63)
end
return moved
"""
)

HEARTBEAT = (
    SERVER_NOW
    + """
-- A worker process is alive and running these jobs (replaces the last list); and, since
-- every live worker beats, the beat is also where dead ones are found: a worker whose
-- heartbeat lapsed is dead, and the jobs its tasks held (and still own), those whose messages
-- it had received or claimed but not started (ticket still there), are made due now and their
-- epoch moves on, so a worker that was only cut off can no longer save them.
-- Per worker, not per job: one call a beat, whatever the number of tasks.
-- Returns {server time, jobs moved on}.
-- KEYS: workers, worker_jobs, due, wake
-- ARGV: worker id, jobs ttl (ms), dead_after_s, job_prefix, worker_prefix, worker_suffix,
--       job ids...
local now = server_now()
local moved = 0
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[3]),
                        'LIMIT', 0, 100)
for _, worker in ipairs(dead) do
  local jobs = ARGV[5] .. worker .. ARGV[6]
  for _, id in ipairs(redis.call('SMEMBERS', jobs)) do
    local key = ARGV[4] .. id
    local f = redis.call('HMGET', key, 'owner', 'next', 'ticket')
    if (f[1] == worker or (not f[1] and f[3])) and f[2] and f[2] ~= '' then
      -- the ticket goes too: its message sat in the dead worker's buffer, not in a queue,
      -- so the claim must publish again at once rather than wait for a queued message
      redis.call('HDEL', key, 'owner', 'ticket')
      redis.call('HINCRBY', key, 'epoch', 1)
      redis.call('ZADD', KEYS[3], now, id)
      moved = moved + 1
    end
  end
  redis.call('DEL', jobs)
  redis.call('ZREM', KEYS[1], worker)
end
if moved > 0 then
  redis.call('RPUSH', KEYS[4], '1')
  redis.call('LTRIM', KEYS[4], 0, 63)
end
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('DEL', KEYS[2])
if #ARGV > 6 then
  redis.call('SADD', KEYS[2], unpack(ARGV, 7))
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
end
return {tostring(now), moved}
"""
)

OVERDUE = (
    SERVER_NOW
    + """
-- How many jobs have been due for longer than a grace period, by the Redis server's clock
-- (the exporter's host clock may be off by minutes).
-- KEYS: due; ARGV: grace_s
return redis.call('ZCOUNT', KEYS[1], '-inf', '(' .. tostring(server_now() - tonumber(ARGV[1])))
"""
)

OPEN_BATCH = """
-- A submission into a batch begins: record the batch's callbacks (those given), and unseal
-- a batch that has callbacks, so its end waits for this submission's (SEAL_BATCH).
-- KEYS: batch_callbacks; ARGV: ttl, task, webhook, name, created_at (epoch s)
if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], 'task', ARGV[2]) end
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'webhook', ARGV[3]) end
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSETNX', KEYS[1], 'name', ARGV[4])
redis.call('HSETNX', KEYS[1], 'created_at', ARGV[5])
redis.call('HSET', KEYS[1], 'sealed', '0')
redis.call('EXPIRE', KEYS[1], ARGV[1])
return 1
"""

SEAL_BATCH = (
    SERVER_NOW
    + CALLBACKS_ON_END
    + """
-- A submission into a batch finished: the batch may end now. If its last job already ended
-- while this submission was adding jobs, the batch is done at once. Safe to send twice (the
-- second call finds `ended_open` cleared).
-- KEYS: batch_callbacks, batch_counts, outbox, wake; ARGV: spec (JSON: prefix, ttl), batch id
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'sealed', '1')
if redis.call('HGET', KEYS[1], 'ended_open') == '1' and batch_live(KEYS[2]) == 0 then
  batch_done(cjson.decode(ARGV[1]), KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[2], server_now())
  return 1
end
return 0
"""
)

CLAIM_OUTBOX = (
    SERVER_NOW
    + """
-- Claim due callbacks: re-score each to its lease end (a pump that dies before publishing,
-- or a delivery task that dies, leaves it to be claimed again) and give it a ticket that one
-- delivery task may take. Entries whose callback expired are dropped.
-- Returns {server now, id, {field, value, ...}, id, {...}, ...}; a re-sent call returns the
-- first reply.
-- KEYS: outbox, reply; ARGV: limit, lease_s, callback_prefix
local cached = redis.call('GET', KEYS[2])
if cached then return cjson.decode(cached) end
local now = server_now()
local out = {tostring(now)}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, ARGV[1])) do
  local key = ARGV[3] .. id
  if redis.call('EXISTS', key) == 0 then
    redis.call('ZREM', KEYS[1], id)
  else
    redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), id)
    redis.call('HSET', key, 'ticket', '1')
    out[#out + 1] = id
    out[#out + 1] = redis.call('HGETALL', key)
  end
end
if #out > 1 then redis.call('SET', KEYS[2], cjson.encode(out), 'PX', 60000) end
return out
"""
)

CALLBACK_SENT = (
    SERVER_NOW
    + """
-- A Celery callback was handed to the broker: it leaves the outbox.
-- KEYS: outbox, callback; ARGV: callback id
redis.call('ZREM', KEYS[1], ARGV[1])
if redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('HSET', KEYS[2], 'state', 'sent', 'sent_at', tostring(server_now()))
  redis.call('HINCRBY', KEYS[2], 'attempts', 1)
  redis.call('HDEL', KEYS[2], 'ticket')
end
return 1
"""
)

TAKE_CALLBACK = (
    SERVER_NOW
    + """
-- One delivery task per claim takes the callback (a duplicate message finds no ticket) and
-- holds its lease for the length of one bounded attempt. Returns its fields, or {}; a
-- re-sent take (same request id) is still the taker.
-- KEYS: outbox, callback; ARGV: callback id, hold_s, request id
if redis.call('HDEL', KEYS[2], 'ticket') == 0 then
  if redis.call('HGET', KEYS[2], 'taker') ~= ARGV[3] then return {} end
else
  redis.call('HSET', KEYS[2], 'taker', ARGV[3])
  redis.call('ZADD', KEYS[1], 'XX', server_now() + tonumber(ARGV[2]), ARGV[1])
end
return redis.call('HGETALL', KEYS[2])
"""
)

CALLBACK_ATTEMPT = (
    SERVER_NOW
    + """
-- One delivery attempt's outcome. Delivered: done. Failed: due again after `delay`, unless
-- that is past the retry window (created_at + retry_s): then given up. Returns the state.
-- KEYS: outbox, callback
-- ARGV: callback id, ok ('1'/'0'), last_status ('' none), last_error, delay_s, retry_s,
--       request id (a re-sent call answers with the state it left)
if redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return 'gone'
end
if redis.call('HGET', KEYS[2], 'attempt_req') == ARGV[7] then
  return redis.call('HGET', KEYS[2], 'state')
end
local now = server_now()
redis.call('HSET', KEYS[2], 'attempt_req', ARGV[7])
redis.call('HINCRBY', KEYS[2], 'attempts', 1)
redis.call('HSET', KEYS[2], 'last_status', ARGV[3], 'last_error', ARGV[4],
           'last_attempt_at', tostring(now))
local state
if ARGV[2] == '1' then
  state = 'delivered'
  redis.call('HSET', KEYS[2], 'delivered_at', tostring(now))
  redis.call('ZREM', KEYS[1], ARGV[1])
else
  local created = tonumber(redis.call('HGET', KEYS[2], 'created_at') or tostring(now))
  local next_at = now + tonumber(ARGV[5])
  if next_at > created + tonumber(ARGV[6]) then
    state = 'given_up'
    redis.call('HSET', KEYS[2], 'given_up_at', tostring(now))
    redis.call('ZREM', KEYS[1], ARGV[1])
  else
    state = 'retrying'
    redis.call('ZADD', KEYS[1], next_at, ARGV[1])
  end
end
redis.call('HSET', KEYS[2], 'state', state)
return state
"""
)
