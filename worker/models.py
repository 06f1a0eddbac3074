"""Records askq keeps in Redis and shows to users, as pydantic models serialised to JSON.

`JobRequest` is what a producer asks for; `JobRecord` is the whole life of one job (the
source of truth, invariant 1 of docs/design.md); `JobResult` is the public result record.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from worker.errors import RecordError
from worker.states import JobStatus

MAX_USER_METADATA_KEYS = 15
"""The API allows 16 metadata keys per run; askq keeps one (`askq_job`) for itself."""


METADATA_KEY_MAX = 64
METADATA_VALUE_MAX = 512

TOOL_CHOICE_MODES = frozenset({"auto", "none", "required"})
"""`tool_choice` values every protocol spells the same; anything else names one function."""
TOOL_CHOICE_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
"""A mode, or a function name as the APIs allow them."""
TASK_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.:-]{0,199}$"
"""A Celery task name as users write them (`myapp.tasks.on_done`)."""
MAX_URL_CHARS = 2048


def check_task_name(value: str | None) -> str | None:
    """A callback task name: Celery's shape, and never one of askq's own tasks (a record
    sent as a job id would be refused anyway, but a typo must fail at submission)."""
    if value is not None and value.startswith("askq."):
        raise ValueError(f"{value!r}: task names starting with 'askq.' are askq's own")
    return value


def check_webhook_url(value: str | None) -> str | None:
    """Only http(s) URLs with a host: askq's workers POST to it."""
    if value is None:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"webhook URL must be http(s)://host/..., got {value[:80]!r}")
    if len(value) > MAX_URL_CHARS:
        raise ValueError(f"webhook URL is longer than {MAX_URL_CHARS} characters")
    return value


def utcnow() -> datetime:
    return datetime.now(UTC)


class Message(BaseModel):
    """One message of a conversation given up front (`system` goes to instructions)."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["user", "assistant"]
    content: str


class JobRequest(BaseModel):
    """What a producer asks for: one question (or a short conversation) for one run."""

    model_config = ConfigDict(extra="forbid")

    question: str | None = None
    messages: list[Message] | None = None
    custom_id: str | None = Field(default=None, min_length=1, max_length=512)
    thread_id: str | None = Field(
        default=None,
        validation_alias=AliasChoices("thread_id", "session_id"),
        description="The thread (Assistants), conversation (Responses) or session (Agents) to "
        "continue; `session_id` is accepted as its other name.",
    )
    assistant_id: str | None = None
    agent_id: str | None = Field(default=None, description="The saved agent (Agents style).")
    model: str | None = None
    instructions: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    max_tokens: int | None = Field(
        default=None,
        ge=1,
        description="max_completion_tokens (Assistants) or max_output_tokens (Responses).",
    )
    tools: list[str] | None = Field(
        default=None, description="Names of registered tools this job may use; None means all."
    )
    tool_choice: str | None = Field(
        default=None,
        pattern=TOOL_CHOICE_PATTERN,
        description="'auto', 'none', 'required', or the name of the one function the run "
        "must call; each adapter spells it in its protocol's shape.",
    )
    on_done: str | None = Field(
        default=None,
        pattern=TASK_NAME_PATTERN,
        description="A Celery task (by name) sent the job's result record when it ends, to "
        "ASKQ_CALLBACK_QUEUE: it runs on the user's own workers.",
    )
    webhook_url: str | None = Field(
        default=None,
        description="An http(s) URL askq POSTs the job's result record to when it ends, "
        "signed with ASKQ_CALLBACK_SECRET (Standard Webhooks).",
    )

    _task_name = field_validator("on_done")(check_task_name)
    _webhook = field_validator("webhook_url")(check_webhook_url)

    @model_validator(mode="before")
    @classmethod
    def _one_thread(cls, data: Any) -> Any:
        """`session_id` is `thread_id` by another name: one of them, or both equal."""
        if isinstance(data, dict) and "session_id" in data and "thread_id" in data:
            session, thread = data["session_id"], data["thread_id"]
            if session is not None and thread is not None and session != thread:
                raise ValueError("give 'thread_id' or 'session_id' (the same thing), not both")
            data = {k: v for k, v in data.items() if k != "session_id"}
            data["thread_id"] = thread if thread is not None else session
        return data

    @model_validator(mode="after")
    def _one_prompt(self) -> JobRequest:
        if (self.question is None) == (self.messages is None):
            raise ValueError("give exactly one of 'question' or 'messages'")
        if self.question is not None and not self.question.strip():
            raise ValueError("'question' is empty")
        if self.messages is not None:
            if not self.messages:
                raise ValueError("'messages' is empty")
            if self.messages[-1].role != "user":
                raise ValueError("the last message must come from the user")
        if len(self.metadata) > MAX_USER_METADATA_KEYS:
            raise ValueError(f"'metadata' holds at most {MAX_USER_METADATA_KEYS} keys")
        if "askq_job" in self.metadata:
            raise ValueError("'metadata' key 'askq_job' is reserved for askq")
        for key, value in self.metadata.items():
            if len(key) > METADATA_KEY_MAX or len(value) > METADATA_VALUE_MAX:
                raise ValueError(
                    f"'metadata' keys hold at most {METADATA_KEY_MAX} characters and values "
                    f"{METADATA_VALUE_MAX} (as the API requires)"
                )
        return self

    def conversation(self) -> list[Message]:
        """The messages to put on the thread, in order."""
        if self.messages is not None:
            return list(self.messages)
        assert self.question is not None
        return [Message(role="user", content=self.question)]


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            total_tokens=self.total_tokens + other.total_tokens,
        )


class ErrorInfo(BaseModel):
    code: str
    message: str


class ToolCall(BaseModel):
    """A function call the run asked for."""

    id: str
    name: str
    arguments: str


class ToolCallRecord(BaseModel):
    """A tool call askq ran, as shown in results."""

    id: str
    name: str
    arguments: str
    output: str
    error: str | None = None
    duration_s: float = 0.0


class JobRecord(BaseModel):
    """Everything askq knows about one job; stored as JSON under its job key."""

    job_id: str
    batch_id: str | None = None
    seq: int = 0
    request: JobRequest
    status: JobStatus = JobStatus.PENDING
    thread_id: str | None = None
    thread_created: bool = Field(
        default=False, description="askq created this thread (so it may list its runs to adopt)."
    )
    message_id: str | None = Field(
        default=None, description="The message askq added to an existing thread."
    )
    maybe_started: bool = Field(
        default=False,
        description="A run may exist that askq has not recorded (a start was cut short).",
    )
    stray_check: bool = Field(
        default=False,
        description="A run creation was sent and its answer lost: before the job ends, look "
        "for runs of this job the server made anyway, and cancel them.",
    )
    run_id: str | None = None
    run_ids: list[str] = Field(
        default_factory=list, description="Every run/response of this job, oldest first."
    )
    answer: str | None = Field(
        default=None, description="The run's text: the answer, or an incomplete run's part."
    )
    usage: Usage | None = None
    settled_usage: Usage | None = Field(
        default=None, description="Usage of earlier responses of a tool-call chain."
    )
    error: ErrorInfo | None = None
    required_calls: list[ToolCall] = Field(default_factory=list)
    tool_calls: list[ToolCallRecord] = Field(default_factory=list)
    polls: int = 0
    running_at_s: float = Field(
        default=0.0, description="Seconds after the start when a look last saw the run going."
    )
    api_retries: int = 0
    busy_waits: int = 0
    created_at: datetime = Field(default_factory=utcnow)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    deadline_at: datetime

    def to_json(self) -> str:
        return self.model_dump_json(exclude_defaults=True)

    @classmethod
    def from_json(cls, raw: str | bytes) -> JobRecord:
        try:
            return cls.model_validate_json(raw)
        except ValidationError as exc:
            raise RecordError(f"unreadable job record: {exc.errors()[0]['msg']}") from exc

    def result(self) -> JobResult:
        return JobResult(
            job_id=self.job_id,
            batch_id=self.batch_id,
            custom_id=self.request.custom_id,
            status=self.status,
            answer=self.answer if self.status is JobStatus.COMPLETED else None,
            partial_answer=self.answer if self.status is JobStatus.INCOMPLETE else None,
            thread_id=self.thread_id,
            run_id=self.run_id,
            usage=self.usage,
            error=self.error,
            tool_calls=self.tool_calls,
            created_at=self.created_at,
            finished_at=self.finished_at,
        )


class JobResult(BaseModel):
    """The public result record (`askq results`, `askq status --json`)."""

    job_id: str
    batch_id: str | None
    custom_id: str | None
    status: JobStatus
    answer: str | None
    thread_id: str | None
    run_id: str | None
    usage: Usage | None
    error: ErrorInfo | None
    tool_calls: list[ToolCallRecord]
    created_at: datetime
    finished_at: datetime | None
    partial_answer: str | None = Field(
        default=None,
        description="The text an `incomplete` run produced before its token limit (billed, "
        "but not an answer: `answer` stays null unless completed).",
    )

    def to_json_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


class BatchRecord(BaseModel):
    """A named group of jobs; job ids are kept in input order in their own Redis list."""

    batch_id: str
    name: str | None = None
    size: int = 0
    created_at: datetime = Field(default_factory=utcnow)


class BatchSummary(BaseModel):
    """What `on_batch_done` receives (and a batch's webhook): sent once when its last job
    ends."""

    batch_id: str
    name: str | None
    counts: dict[JobStatus, int] = Field(description="Jobs by terminal status (none live).")
    total: int
    created_at: datetime | None
    first_finished_at: datetime = Field(description="When the first job of this round ended.")
    last_finished_at: datetime = Field(description="When the last job ended (the batch's end).")


class Delivery(BaseModel):
    """Where one callback stands (`askq status`): sent (Celery) or delivered (webhook), still
    retrying, or given up."""

    callback_id: str
    kind: Literal["task", "webhook"]
    target: str = Field(description="The task name, or the webhook URL without its query.")
    event: Literal["job.done", "batch.done"]
    state: Literal["pending", "sent", "retrying", "delivered", "given_up"]
    attempts: int = 0
    last_status: int | None = Field(default=None, description="HTTP status of the last try.")
    last_error: str | None = None
    created_at: datetime
    last_attempt_at: datetime | None = None
    sent_at: datetime | None = None
    delivered_at: datetime | None = None
    given_up_at: datetime | None = None
