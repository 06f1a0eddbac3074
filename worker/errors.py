"""The askq exception tree. Tasks decide retry-or-fail by type, never by message text.

AskqError
├── ConfigError            bad or missing settings (exit 2 in the CLI)
├── InputError             a bad question, file line or id from a user (exit 2)
│   └── NotFound           an unknown job or batch id
├── StoreError             Redis cannot be reached or answers oddly
│   ├── RecordError        a stored record that cannot be read back
│   ├── RedisFull          Redis is out of memory, or above the submission high-water mark
│   └── PartialSubmit      Redis failed part-way through submitting a batch
├── ClaimLost              another task owns the job now (its claim's epoch moved on)
└── ApiError               an outcome of a call to the assistant API
    ├── RetryableApiError  429, 5xx, timeouts, connection errors: try again later
    │   ├── ThreadBusy     the thread/conversation has an active run
    │   └── RateLimited    askq's own request budget (ASKQ_RATE_LIMIT_RPM) is spent
    └── FinalApiError      other 4xx: the API refused; the job fails with its message
        ├── RunGone        the run/response is not there any more (404)
        └── OverLimit      the API sent more than askq's bounds allow (ASKQ_MAX_*)
"""

from __future__ import annotations


class AskqError(Exception):
    """Base of every error askq raises on purpose."""


class ConfigError(AskqError):
    """Settings are missing or inconsistent."""


class InputError(AskqError):
    """Something a user gave askq cannot be used."""


class NotFound(InputError):
    """No job or batch has this id (or it expired)."""


class StoreError(AskqError):
    """The job store (Redis) failed."""


class RecordError(StoreError):
    """A stored record could not be decoded."""


class RedisFull(StoreError):
    """Redis refused a write for lack of memory, or submission was refused because Redis is
    above ASKQ_REDIS_HIGH_WATER_PCT of its maxmemory (room kept for running jobs)."""


class PartialSubmit(StoreError):
    """Redis failed part-way through a batch: `accepted` jobs of `batch_id` are in (and will
    run; `exact` False when Redis could not be asked, then at least that many); submitting
    the same items `--into` the same batch adds the rest without running those twice."""

    def __init__(self, message: str, *, batch_id: str, accepted: int, exact: bool = True) -> None:
        super().__init__(message)
        self.batch_id = batch_id
        self.accepted = accepted
        self.exact = exact


class ClaimLost(AskqError):
    """The task's claim on its job was taken over (its worker was thought dead, or the task
    outlived its bound): another task owns the job, and this one must stop at once."""


class ApiError(AskqError):
    """A call to the assistant API did not give what askq needs."""

    def __init__(self, message: str, *, status: int | None = None, code: str = "api_error"):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class RetryableApiError(ApiError):
    """Worth trying again after `retry_after` seconds (when the server said)."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str = "api_error",
        retry_after: float | None = None,
    ):
        super().__init__(message, status=status, code=code)
        self.retry_after = retry_after


class ThreadBusy(RetryableApiError):
    """The thread (or conversation) is locked by an active run."""


class RateLimited(RetryableApiError):
    """Not sent: the global request budget says wait `retry_after` seconds first."""


class FinalApiError(ApiError):
    """The API refused the request; retrying would give the same answer."""


class RunGone(FinalApiError):
    """The run or response does not exist (any more)."""


class OverLimit(FinalApiError):
    """The API sent more than askq accepts (a body, pages, an answer, tool calls or their
    arguments past an ASKQ_MAX_* bound): the job fails with this code, memory stays flat.
    `run_waits`: the run is left waiting for askq (tool outputs) and must be cancelled."""

    def __init__(self, message: str, *, code: str, run_waits: bool = False) -> None:
        super().__init__(message, code=code)
        self.run_waits = run_waits
