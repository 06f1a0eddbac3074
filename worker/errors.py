"""The askq exception tree. Tasks decide retry-or-fail by type, never by message text.

AskqError
├── ConfigError            bad or missing settings (exit 2 in the CLI)
├── InputError             a bad question, file line or id from a user (exit 2)
│   └── NotFound           an unknown job or batch id
├── StoreError             Redis cannot be reached or answers oddly
│   ├── RecordError        a stored record that cannot be read back
│   └── PartialSubmit      Redis failed part-way through submitting a batch
└── ApiError               an outcome of a call to the assistant API
    ├── RetryableApiError  429, 5xx, timeouts, connection errors: try again later
    │   ├── ThreadBusy     the thread/conversation has an active run
    │   └── RateLimited    askq's own request budget (ASKQ_RATE_LIMIT_RPM) is spent
    └── FinalApiError      other 4xx: the API refused; the job fails with its message
        └── RunGone        the run/response is not there any more (404)
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


class PartialSubmit(StoreError):
    """Redis failed part-way through a batch: `accepted` jobs of `batch_id` are in (and will
    run); re-submit with the same batch name to add the rest without running those twice."""

    def __init__(self, message: str, *, batch_id: str, accepted: int) -> None:
        super().__init__(message)
        self.batch_id = batch_id
        self.accepted = accepted


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
