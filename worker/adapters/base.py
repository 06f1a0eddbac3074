"""What every protocol adapter offers the tasks, and the HTTP plumbing they share.

An adapter turns a job record into API calls and API answers into `Snapshot`s; it keeps no
state of its own (the record holds thread, run and message ids), so any worker can pick up
any job. It takes its `httpx.Client` from outside: one pooled client per worker process.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from worker.errors import (
    ApiError,
    FinalApiError,
    OverLimit,
    RateLimited,
    RetryableApiError,
    RunGone,
    ThreadBusy,
)
from worker.machine import Snapshot
from worker.models import JobRecord, ToolCall
from worker.settings import Settings

ToolSpecs = Callable[[JobRecord], list[dict[str, Any]]]
"""The function-tool definitions to send with a job's run, in the adapter's shape."""

Budget = Callable[[bool], float]
"""Takes one request from the global budget (True: a follow-up that may overdraw it);
returns the seconds to wait first, 0.0 to go now."""

RequestHook = Callable[[str, int], None]
"""Called with (route, status) after every API response (status 0: no response)."""

# The APIs report "this thread/conversation/session is busy" as a plain 400; these phrases
# (and the codes `conversation_locked`, `active_turn_not_steerable`) are how OpenAI words it.
BUSY_PHRASES = (
    "already has an active run",
    "while a run",
    "conversation_locked",
    "active_turn_not_steerable",
)


@dataclass(frozen=True)
class Bounds:
    """What askq accepts from an API, so a huge or endless answer cannot take a worker's
    memory or Redis's (each an ASKQ_ setting; defaults in docs/settings.md)."""

    request_deadline_s: float = 60.0
    """Total time of one request: connect, send, headers and the whole body."""
    max_response_bytes: int = 8 * 1024 * 1024
    max_answer_pages: int = 20
    max_answer_chars: int = 1_000_000
    max_tool_calls: int = 32
    max_tool_argument_bytes: int = 256 * 1024

    @classmethod
    def from_settings(cls, settings: Settings) -> Bounds:
        return cls(
            request_deadline_s=settings.request_deadline_s,
            max_response_bytes=settings.max_response_bytes,
            max_answer_pages=settings.max_answer_pages,
            max_answer_chars=settings.max_answer_chars,
            max_tool_calls=settings.max_tool_calls,
            max_tool_argument_bytes=settings.max_tool_argument_bytes,
        )

    def check_answer(self, chars: int) -> None:
        if chars > self.max_answer_chars:
            raise OverLimit(
                f"the answer is longer than ASKQ_MAX_ANSWER_CHARS={self.max_answer_chars}",
                code="answer_too_large",
            )

    def check_pages(self, pages: int) -> None:
        if pages >= self.max_answer_pages:
            raise OverLimit(
                f"the answer spans more than ASKQ_MAX_ANSWER_PAGES={self.max_answer_pages} "
                "pages of messages",
                code="too_many_answer_pages",
            )

    def check_tool_calls(self, calls: Sequence[ToolCall]) -> None:
        if len(calls) > self.max_tool_calls:
            raise OverLimit(
                f"the run asked for {len(calls)} tool calls in one step; "
                f"ASKQ_MAX_TOOL_CALLS={self.max_tool_calls}",
                code="too_many_tool_calls",
                run_waits=True,
            )
        for call in calls:
            if len(call.arguments.encode()) > self.max_tool_argument_bytes:
                raise OverLimit(
                    f"tool call {call.name!r} has arguments over "
                    f"ASKQ_MAX_TOOL_ARGUMENT_BYTES={self.max_tool_argument_bytes}",
                    code="tool_arguments_too_large",
                    run_waits=True,
                )


class Adapter(Protocol):
    """The one interface both protocols implement."""

    def follow_up(self) -> AbstractContextManager[None]:
        """Requests made inside complete a step already begun (the run right after its
        thread): they spend the request budget even when it is exhausted."""
        ...

    def create_thread(self, job: JobRecord) -> str | None:
        """The job's new thread; None when this server needs none."""
        ...

    def add_messages(self, job: JobRecord) -> str: ...

    def find_run(self, job: JobRecord) -> Snapshot | None: ...

    def create_run(self, job: JobRecord) -> Snapshot: ...

    def poll(self, job: JobRecord) -> Snapshot: ...

    def submit_tool_outputs(self, job: JobRecord, outputs: list[tuple[str, str]]) -> Snapshot: ...

    def stray_runs(self, job: JobRecord) -> list[str]:
        """Live runs carrying this job's `askq_job` other than those it recorded (a creation
        the server carried out after askq gave up on it). An adapter that cannot list runs,
        or whose creations are exactly-once (an idempotency key), returns []."""
        ...

    def cancel(self, job: JobRecord, run_id: str | None = None) -> None:
        """Cancel the job's current run, or `run_id` (another run of the same job)."""
        ...


def _retry_after(response: httpx.Response) -> float | None:
    if (ms := response.headers.get("retry-after-ms")) is not None:
        try:
            return float(ms) / 1000.0
        except ValueError:
            pass
    if (seconds := response.headers.get("retry-after")) is not None:
        try:
            return float(seconds)
        except ValueError:
            return None
    return None


def _message(response: httpx.Response) -> tuple[str, str]:
    try:
        body = response.json()
        error = body.get("error") or {}
        return str(error.get("message") or response.text[:300]), str(
            error.get("code") or error.get("type") or f"http_{response.status_code}"
        )
    except (ValueError, AttributeError):
        return response.text[:300] or response.reason_phrase, f"http_{response.status_code}"


def poll_after(response: httpx.Response) -> float | None:
    """The server's `openai-poll-after-ms` hint, in seconds."""
    raw = response.headers.get("openai-poll-after-ms")
    try:
        return float(raw) / 1000.0 if raw is not None else None
    except ValueError:
        return None


class HttpApi:
    """Sends one request within a total deadline and a body-size cap, and classifies the
    outcome into the askq error tree."""

    def __init__(
        self,
        client: httpx.Client,
        hook: RequestHook | None = None,
        budget: Budget | None = None,
        bounds: Bounds | None = None,
    ) -> None:
        self.client = client
        self.hook = hook
        self.budget = budget
        self.bounds = bounds or Bounds()
        self._local = threading.local()

    @contextmanager
    def follow_up(self) -> Iterator[None]:
        """Requests within are follow-ups (they may overdraw the budget). Nestable: an
        adapter's own follow-up inside a driver's must not end the driver's on exit."""
        outer = getattr(self._local, "follow_up", False)
        self._local.follow_up = True
        try:
            yield
        finally:
            self._local.follow_up = outer

    def _spend(self, route: str) -> None:
        if self.budget is None:
            return
        wait = self.budget(getattr(self._local, "follow_up", False))
        if wait > 0:
            raise RateLimited(
                f"{route}: request budget spent", code="rate_limited", retry_after=wait
            )

    def call(
        self,
        method: str,
        url: str,
        *,
        route: str,
        json: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        self._spend(route)
        try:
            response = self._send(method, url, route, json=json, params=params, headers=headers)
        except OverLimit:
            self._count(route, 0)
            raise
        except httpx.TimeoutException as exc:
            self._count(route, 0)
            raise RetryableApiError(f"{route}: timed out", code="timeout") from exc
        except httpx.TransportError as exc:
            self._count(route, 0)
            raise RetryableApiError(
                f"{route}: {type(exc).__name__}: {exc}", code="connection_error"
            ) from exc
        self._count(route, response.status_code)
        if response.is_success:
            return response
        raise self.error(method, route, response)

    def _send(
        self,
        method: str,
        url: str,
        route: str,
        *,
        json: dict[str, Any] | None,
        params: dict[str, Any] | None,
        headers: dict[str, str] | None,
    ) -> httpx.Response:
        """httpx's timeout bounds each read, so a server trickling a byte a second holds a
        request forever: the body is streamed, and the deadline and size cap are checked
        between reads (a single read is bounded by the client's read timeout, itself no
        longer than the deadline)."""
        bounds = self.bounds
        deadline = time.monotonic() + bounds.request_deadline_s
        request = self.client.build_request(method, url, json=json, params=params, headers=headers)
        response = self.client.send(request, stream=True)
        try:
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > bounds.max_response_bytes:
                    raise OverLimit(
                        f"{route}: the response is larger than "
                        f"ASKQ_MAX_RESPONSE_BYTES={bounds.max_response_bytes}",
                        code="response_too_large",
                    )
                if time.monotonic() > deadline:
                    raise httpx.ReadTimeout(
                        f"no whole answer within ASKQ_REQUEST_DEADLINE_S="
                        f"{bounds.request_deadline_s:g}",
                        request=request,
                    )
        finally:
            response.close()
        # the body is already decoded: keep the headers that describe it as it is now
        kept = [
            (name, value)
            for name, value in response.headers.multi_items()
            if name.lower() not in ("content-encoding", "content-length", "transfer-encoding")
        ]
        return httpx.Response(
            response.status_code,
            headers=kept,
            content=bytes(body),
            request=request,
            extensions=response.extensions,
        )

    def _count(self, route: str, status: int) -> None:
        if self.hook is not None:
            self.hook(route, status)

    @staticmethod
    def error(method: str, route: str, response: httpx.Response) -> ApiError:
        message, code = _message(response)
        status = response.status_code
        text = f"{message}"
        if status == 429 or status >= 500 or status in (408, 409):
            return RetryableApiError(
                text, status=status, code=code, retry_after=_retry_after(response)
            )
        if status == 400 and any(p in message or p == code for p in BUSY_PHRASES):
            return ThreadBusy(
                text, status=status, code="thread_busy", retry_after=_retry_after(response)
            )
        if status == 404:
            return RunGone(text, status=status, code=code)
        return FinalApiError(text, status=status, code=code)
