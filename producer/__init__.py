"""askq's Python API: everything a user of it handles, importable from here.

`from producer import Client, JobRequest, JobResult, NotFound` — the client (`AsyncClient`
for asyncio), the records it takes and returns, and the errors it raises. Other modules are
internal.
"""

from producer.async_client import AsyncClient
from producer.client import BatchStatus, CancelOutcome, Client, SubmittedBatch
from worker.errors import (
    AskqError,
    ConfigError,
    InputError,
    NotFound,
    PartialSubmit,
    RecordError,
    StoreError,
)
from worker.models import (
    BatchRecord,
    BatchSummary,
    Delivery,
    ErrorInfo,
    JobRequest,
    JobResult,
    Message,
    ToolCallRecord,
    Usage,
)
from worker.settings import Settings
from worker.states import JobStatus

__all__ = [
    "AskqError",
    "AsyncClient",
    "BatchRecord",
    "BatchStatus",
    "BatchSummary",
    "CancelOutcome",
    "Client",
    "ConfigError",
    "Delivery",
    "ErrorInfo",
    "InputError",
    "JobRequest",
    "JobResult",
    "JobStatus",
    "Message",
    "NotFound",
    "PartialSubmit",
    "RecordError",
    "Settings",
    "StoreError",
    "SubmittedBatch",
    "ToolCallRecord",
    "Usage",
]
