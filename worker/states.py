"""Job states, and the one table that maps each protocol's run statuses onto them."""

from __future__ import annotations

from enum import StrEnum


class JobStatus(StrEnum):
    PENDING = "pending"
    """Accepted; waiting for its start (a free in-flight slot, its turn on a thread, a retry)."""
    RUNNING = "running"
    """A remote run exists and is not terminal; askq polls it."""
    REQUIRES_ACTION = "requires_action"
    """The run waits for tool outputs; `askq.act` runs the tools and submits them."""
    CANCELLING = "cancelling"
    """A cancel was asked; the remote run is cancelled and polled until it is terminal."""
    COMPLETED = "completed"
    """The run finished and its answer is stored."""
    FAILED = "failed"
    """The run failed, or the API refused the job, or retries ran out; `error` says why."""
    CANCELLED = "cancelled"
    """Cancelled on request, before or during its run."""
    EXPIRED = "expired"
    """The run expired on the server, or the job outlived ASKQ_JOB_TIMEOUT_S."""
    INCOMPLETE = "incomplete"
    """The run ended early (e.g. a token limit); `error` holds the server's reason."""

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset(
    {
        JobStatus.COMPLETED,
        JobStatus.FAILED,
        JobStatus.CANCELLED,
        JobStatus.EXPIRED,
        JobStatus.INCOMPLETE,
    }
)

RUN_STATUS = {
    # Assistants v2 run statuses
    "queued": JobStatus.RUNNING,  # accepted by the server, not started yet
    "in_progress": JobStatus.RUNNING,  # the model is working
    "requires_action": JobStatus.REQUIRES_ACTION,  # tool outputs are awaited
    "cancelling": JobStatus.CANCELLING,  # cancel accepted, not final yet
    "cancelled": JobStatus.CANCELLED,
    "failed": JobStatus.FAILED,  # last_error says why
    "completed": JobStatus.COMPLETED,
    "incomplete": JobStatus.INCOMPLETE,  # incomplete_details says why
    "expired": JobStatus.EXPIRED,  # run or its requires_action passed expires_at
    # Agents API turn statuses beyond those above
    "waiting": JobStatus.REQUIRES_ACTION,  # the turn waits for the function results its
    # session lists in `required_actions` (the adapter reads them from the session)
}
"""Remote run (or background response) status → job status. Responses background mode uses
a subset of the same words (`queued`, `in_progress`, `completed`, `failed`, `cancelled`,
`incomplete`); a `function_call` in its output is reported by its adapter as
`requires_action`, so both protocols share this one table. An Agents API turn uses `queued`,
`in_progress`, `waiting`, `completed`, `failed` and `cancelled`; its adapter reports a turn
that failed for `max_output_tokens` as `incomplete` and one waiting for an action askq cannot
take (an MCP or computer-use approval) as `failed`."""
