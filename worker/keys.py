"""The whole Redis layout of askq, in one place. No other module builds a key name.

Job keys are also derived inside Lua scripts from `Keys.job_prefix` (the claim and
transition scripts touch jobs they only know by id), so that prefix is passed to them here.
"""

from __future__ import annotations

from dataclasses import dataclass

JOB_LATENCY_BUCKETS: tuple[float, ...] = (
    0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
)  # fmt: skip
"""Upper bounds (s) of the job latency histogram (`Keys.job_latency`); `+Inf` holds the rest."""


POLL_LATENESS_BUCKETS: tuple[float, ...] = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
"""Upper bounds (s) of the poll lateness histogram (`Keys.poll_lateness`); `+Inf` the rest."""


def job_latency_bucket(seconds: float) -> str:
    """The `le` of the `Keys.job_latency` bucket that counts a job that took `seconds`."""
    for bound in JOB_LATENCY_BUCKETS:
        if seconds <= bound:
            return repr(bound)
    return "+Inf"


@dataclass(frozen=True)
class Keys:
    prefix: str = "askq"

    @property
    def job_prefix(self) -> str:
        return f"{self.prefix}:job:"

    def job(self, job_id: str) -> str:
        """Hash: `version`, `status`, `record` (JSON JobRecord), `next` (the task that drives
        the job on), `ticket` (set when a task message is published, taken by that task),
        `epoch` (bumped by every publication: the fencing token of the task that takes it),
        `published_at` (when the pump last published a message for it), `due_at` (the due
        time its last save set), `owner` / `taken_at` / `taker` (the worker process running
        the task, when it took it, the take's request id), `req` (request id of the last
        save), `cancel` (requested → taken → done), `poked` (a provider webhook named the
        job since its poll was taken), `callbacks` (ids of the callbacks its last end
        wrote)."""
        return f"{self.job_prefix}{job_id}"

    def batch(self, batch_id: str) -> str:
        """String: JSON BatchRecord."""
        return f"{self.prefix}:batch:{batch_id}"

    def batch_jobs(self, batch_id: str) -> str:
        """List: the batch's job ids in input order."""
        return f"{self.prefix}:batch:{batch_id}:jobs"

    def batch_counts(self, batch_id: str) -> str:
        """Hash: status → number of the batch's jobs in it (kept by the transition script)."""
        return f"{self.prefix}:batch:{batch_id}:counts"

    def batch_ended(self, batch_id: str) -> str:
        """Stream: one entry (`job` → job id) each time a job of the batch ends, appended by
        the transition script in the same step, so `askq results --follow` reads ends in
        finishing order and blocks (XREAD) instead of polling. Capped at about a million entries
        (lua.TRANSITION) and expiring with the results; a follower reads the batch's records
        for whatever the stream no longer holds."""
        return f"{self.prefix}:batch:{batch_id}:ended"

    def batch_items(self, batch_id: str) -> str:
        """Hash: item key (custom_id, or a digest of the request) → job id, so re-submitting
        the same items to a named batch skips them."""
        return f"{self.prefix}:batch:{batch_id}:items"

    @property
    def batches(self) -> str:
        """Sorted set: batch id → creation time (epoch s), newest last, for `askq batches`;
        entries older than a batch's lifetime are trimmed whenever a batch is created."""
        return f"{self.prefix}:batches"

    def batch_name(self, name: str) -> str:
        """String: the batch id submitted under a user-chosen name (safe re-submission)."""
        return f"{self.prefix}:batch-name:{name}"

    def thread_queue(self, thread_id: str) -> str:
        """List: ids of jobs naming this thread, in submission order; only the head may run."""
        return f"{self.prefix}:thread:{thread_id}"

    @property
    def due(self) -> str:
        """Sorted set: job id → when its next task is due (epoch s). A claimed entry is
        re-scored to its lease end, so the same set is the lease index of the sweep."""
        return f"{self.prefix}:due"

    @property
    def wake(self) -> str:
        """List: pokes that wake a sleeping pump when something is due now."""
        return f"{self.prefix}:wake"

    @property
    def deadlines(self) -> str:
        """Sorted set: live job id → the time it expires (ASKQ_JOB_TIMEOUT_S)."""
        return f"{self.prefix}:deadlines"

    broker_queue_prefix = ""
    """kombu's Redis transport keeps the messages waiting in a queue in a list named after the
    queue (priority 0, no `global_keyprefix`); askq's queues are named after their tasks."""

    def broker_queue(self, queue: str) -> str:
        """List (kombu's): the messages waiting in this Celery queue."""
        return f"{self.broker_queue_prefix}{queue}"

    @property
    def inflight(self) -> str:
        """Sorted set: job ids holding one of the ASKQ_MAX_INFLIGHT slots → when the slot was
        taken or last found still in use by the sweep."""
        return f"{self.prefix}:inflight"

    @property
    def waiting(self) -> str:
        """Sorted set: pending job id → submission sequence, queued for a free slot (FIFO)."""
        return f"{self.prefix}:waiting"

    @property
    def seq(self) -> str:
        """Counter: submission sequence numbers."""
        return f"{self.prefix}:seq"

    @property
    def counts(self) -> str:
        """Hash: status → number of jobs in it, all batches (metrics)."""
        return f"{self.prefix}:counts"

    @property
    def workers(self) -> str:
        """Sorted set: worker process id → its last heartbeat (Redis server time, s)."""
        return f"{self.prefix}:workers"

    @property
    def worker_prefix(self) -> str:
        return f"{self.prefix}:worker:"

    worker_suffix = ":jobs"

    def worker_jobs(self, worker_id: str) -> str:
        """Set, with a TTL: the jobs whose tasks this worker process is running, as of its
        last heartbeat."""
        return f"{self.worker_prefix}{worker_id}{self.worker_suffix}"

    def claim_reply(self, request_id: str) -> str:
        """String, 60 s: the reply of one claim (of due jobs, or of due callbacks), so a claim
        re-sent by the Redis client after a timeout returns what it claimed instead of
        leaving it to wait for its lease."""
        return f"{self.prefix}:claim:{request_id}"

    @property
    def sweep_lock(self) -> str:
        """String with a TTL: held by the one worker sweeping this interval."""
        return f"{self.prefix}:sweep-lock"

    @property
    def rate_limit(self) -> str:
        """String: `<GCRA theoretical arrival time (ms)>|<request id of the last spend>`."""
        return f"{self.prefix}:rate"

    @property
    def durations(self) -> str:
        """Hash: `<model key>` → smoothed run duration (s), for predictive polling."""
        return f"{self.prefix}:durations"

    def cold_scouts(self, duration_key: str) -> str:
        """Counter with a TTL: runs of this assistant or model started while nothing was
        learned about their durations (the first few are polled as usual: scouts)."""
        return f"{self.prefix}:cold-scouts:{duration_key}"

    def cold_looks(self, duration_key: str) -> str:
        """Sorted set with a TTL: `<job id>|<started at>|<deferred look at>` → the earliest
        that job may be looked at (epoch s), for runs started past the scouts; re-targeted
        and dropped when the first duration of the key is learned."""
        return f"{self.prefix}:cold-looks:{duration_key}"

    @property
    def no_conversations(self) -> str:
        """String with a TTL: the Responses server answered 404 to POST /conversations
        (ASKQ_RESPONSES_CONVERSATIONS=auto stops asking until it expires)."""
        return f"{self.prefix}:no-conversations"

    @property
    def api_requests(self) -> str:
        """Hash: `<method> <status>` → API requests made (metrics)."""
        return f"{self.prefix}:api-requests"

    def run_job(self, remote_id: str) -> str:
        """String with a TTL: the job whose run, response or session has this id (the id a
        provider webhook names), written when the job records it."""
        return f"{self.prefix}:run-job:{remote_id}"

    def webhook_early(self, remote_id: str) -> str:
        """String with a TTL: a webhook named this id before any job had recorded it (the run
        ended before its creation was saved); the job is poked when it records the id."""
        return f"{self.prefix}:webhook-early:{remote_id}"

    def webhook_seen(self, webhook_id: str) -> str:
        """String with a TTL: this webhook delivery was handled (repeats are ignored)."""
        return f"{self.prefix}:webhook-seen:{webhook_id}"

    @property
    def webhook_events(self) -> str:
        """Hash: outcome (`received`, `rejected`, `ignored`, `duplicate`, `unmatched`,
        `matched`) → provider webhook deliveries (metrics)."""
        return f"{self.prefix}:webhook-events"

    @property
    def stray_runs(self) -> str:
        """Counter: runs askq cancelled because no job could record them (a creation the
        server carried out after askq gave up on it; a run made by a task that lost its
        claim) (metrics)."""
        return f"{self.prefix}:stray-runs"

    @property
    def outbox(self) -> str:
        """Sorted set: callback id → when it is due (epoch s): to publish (a Celery callback)
        or to deliver (a webhook, again after a failure). A claimed entry is re-scored to its
        lease end, so a pump or task that dies leaves it to be claimed again."""
        return f"{self.prefix}:outbox"

    @property
    def callback_prefix(self) -> str:
        return f"{self.prefix}:callback:"

    def callback(self, callback_id: str) -> str:
        """Hash, with a TTL: one callback (worker/outbox.py): `kind` (task|webhook), `target`
        (task name or URL), `event` (job.done|batch.done), `subject` (job or batch id), its
        payload (`payload`: a result record; or the batch summary's `counts`, `name`,
        `batch_created_at`, `first_at`, `last_at`), `state`, `attempts`, `created_at`,
        `ticket`, and the delivery's `last_status`, `last_error`, `last_attempt_at`,
        `sent_at`, `delivered_at`, `given_up_at`."""
        return f"{self.callback_prefix}{callback_id}"

    def batch_callbacks(self, batch_id: str) -> str:
        """Hash: a batch's `task` (on_batch_done) and `webhook`, its `name` and `created_at`;
        `sealed` (its submission finished), `ended_open` (its last job ended while a submission
        was still adding jobs), `first_at` (first job end of this round), `round`, and
        `callbacks` (ids of the last round's callbacks). Only batches with callbacks have one."""
        return f"{self.prefix}:batch:{batch_id}:callbacks"

    @property
    def poll_lateness(self) -> str:
        """Hash: histogram of how late polls were taken after their due time: `<le>` (from
        `POLL_LATENESS_BUCKETS`, or `+Inf`) → polls in that bucket alone (metrics; the
        due time is the one a job's last save set, `due_at` in its hash)."""
        return f"{self.prefix}:poll-lateness"

    @property
    def job_latency(self) -> str:
        """Hash: histogram of job latency (submission → terminal status), kept by the
        transition script: `<status> <le>` → jobs that ended in `status` and fell in that
        bucket alone (not cumulative; `le` from `job_latency_bucket`), `<status> sum` → their
        total seconds (metrics)."""
        return f"{self.prefix}:job-latency"
