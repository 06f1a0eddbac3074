"""What every protocol adapter offers the tasks, and the HTTP plumbing they share.

An adapter turns a job record into API calls and API answers into `Snapshot`s; it keeps no
state of its own (the record holds thread, run and message ids), so any worker can pick up
any job. It takes its `httpx.Client` from outside: one pooled client per worker process.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Protocol

import httpx

from worker.errors import (
    ApiError,
    FinalApiError,
    RateLimited,
    RetryableApiError,
    RunGone,
    ThreadBusy,
)
from worker.machine import Snapshot
from worker.models import JobRecord

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

    def cancel(self, job: JobRecord) -> None: ...


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
    """Sends one request, classifies the outcome into the askq error tree."""

    def __init__(
        self, client: httpx.Client, hook: RequestHook | None = None, budget: Budget | None = None
    ) -> None:
        self.client = client
        self.hook = hook
        self.budget = budget
        self._local = threading.local()

    @contextmanager
    def follow_up(self) -> Iterator[None]:
        self._local.follow_up = True
        try:
            yield
        finally:
            self._local.follow_up = False

    def _spend(self, method: str, route: str) -> None:
        if self.budget is None:
            return
        wait = self.budget(getattr(self._local, "follow_up", False))
        if wait > 0:
            raise RateLimited(
                f"{method} {route}: request budget spent", code="rate_limited", retry_after=wait
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
        self._spend(method, route)
        try:
            response = self.client.request(method, url, json=json, params=params, headers=headers)
        except httpx.TimeoutException as exc:
            self._count(route, 0)
            raise RetryableApiError(f"{method} {route}: timed out", code="timeout") from exc
        except httpx.TransportError as exc:
            self._count(route, 0)
            raise RetryableApiError(
                f"{method} {route}: {type(exc).__name__}: {exc}", code="connection_error"
            ) from exc
        self._count(route, response.status_code)
        if response.is_success:
            return response
        raise self.error(method, route, response)

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
