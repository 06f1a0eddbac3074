"""The Responses API in background mode (`background: true`, `store: true`).

A job's thread is a Conversation: a new one per job unless the job names one, so a
follow-up question on it keeps its context. A response whose output asks for function
calls puts the job in `requires_action`; the outputs go back as `function_call_output`
items in a new background response on the same conversation, which askq then polls: the
job keeps the chain of response ids.

Exactly-once: the Responses API lists no responses, so a crashed start cannot find the
response it may have created. askq creates (and records) the conversation first; a retried
start whose conversation already holds items will not create a second response, and fails
the job with `ambiguous_start` instead (at most one response is billed, never two).
For a conversation the user named, askq cannot tell its own input from earlier turns, so
that case is at-least-once.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any, Protocol

import httpx

from worker.adapters.base import Bounds, Budget, HttpApi, RequestHook, ToolSpecs, poll_after
from worker.errors import FinalApiError, RunGone
from worker.machine import Snapshot
from worker.models import TOOL_CHOICE_MODES, ErrorInfo, JobRecord, ToolCall, Usage

INLINE_MESSAGE = "inline"
"""Responses send the question with the response itself: no message to add first."""


def token_usage(raw: dict[str, Any] | None) -> Usage | None:
    """`input_tokens`/`output_tokens` usage (Responses, Agents turns) in askq's words."""
    if not raw:
        return None
    prompt = int(raw.get("input_tokens") or 0)
    completion = int(raw.get("output_tokens") or 0)
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=int(raw.get("total_tokens") or prompt + completion),
    )


def _error(response: dict[str, Any]) -> ErrorInfo | None:
    status = response.get("status")
    if status == "failed":
        error = response.get("error") or {}
        return ErrorInfo(
            code=str(error.get("code") or "failed"),
            message=str(error.get("message") or "the response failed"),
        )
    if status == "incomplete":
        reason = str((response.get("incomplete_details") or {}).get("reason") or "unknown")
        return ErrorInfo(code="incomplete", message=f"the response ended early: {reason}")
    return None


def _function_calls(response: dict[str, Any]) -> list[ToolCall]:
    return [
        ToolCall(id=item["call_id"], name=item["name"], arguments=item.get("arguments") or "{}")
        for item in response.get("output") or []
        if item.get("type") == "function_call"
    ]


def tool_choice(choice: str) -> str | dict[str, Any]:
    """A job's tool_choice as the Responses API spells it (a function's name is flat)."""
    if choice in TOOL_CHOICE_MODES:
        return choice
    return {"type": "function", "name": choice}


def output_text(response: dict[str, Any]) -> str:
    """Text of the output's message items, one message per paragraph (what the SDK's
    `output_text` gives, with askq's blank line between several messages)."""
    texts = []
    for item in response.get("output") or []:
        if item.get("type") != "message":
            continue
        texts.append(
            "".join(
                part.get("text", "")
                for part in item.get("content") or []
                if part.get("type") == "output_text"
            )
        )
    return "\n\n".join(texts)


class Conversations(Protocol):
    """Whether this server keeps Conversations (ASKQ_RESPONSES_CONVERSATIONS)."""

    mode: str
    """`on`, `off`, or `auto` (on until the server answers 404, then off, remembered)."""

    def available(self) -> bool: ...

    def missing(self) -> None:
        """The server answered 404: remember it (`auto`)."""
        ...


class Always:
    """Conversations on or off for good (and the default for tests of the adapter)."""

    def __init__(self, mode: str = "on") -> None:
        self.mode = mode

    def available(self) -> bool:
        return self.mode == "on"

    def missing(self) -> None:
        return None


class ResponsesAdapter:
    def __init__(
        self,
        client: httpx.Client,
        *,
        model: str,
        tool_specs: ToolSpecs,
        hook: RequestHook | None = None,
        budget: Budget | None = None,
        conversations: Conversations | None = None,
        bounds: Bounds | None = None,
    ) -> None:
        self.api = HttpApi(client, hook, budget, bounds)
        self.bounds = self.api.bounds
        self.model = model
        self.tool_specs = tool_specs
        self.conversations = conversations or Always()

    def follow_up(self) -> AbstractContextManager[None]:
        return self.api.follow_up()

    def create_thread(self, job: JobRecord) -> str | None:
        """A Conversation for the job; None (chain by previous_response_id) when the server
        keeps none."""
        if not self.conversations.available():
            return None
        try:
            response = self.api.call(
                "POST",
                "conversations",
                route="POST /conversations",
                json={"metadata": {"askq_job": job.job_id}},
            )
        except RunGone:
            if self.conversations.mode != "auto":
                raise
            self.conversations.missing()
            return None
        return str(response.json()["id"])

    def add_messages(self, job: JobRecord) -> str:
        return INLINE_MESSAGE

    def find_run(self, job: JobRecord) -> Snapshot | None:
        if not job.thread_created:
            return None
        if job.thread_id is None:
            raise FinalApiError(
                "a response may already exist for this job (a start was interrupted after "
                "sending it, and without a conversation askq cannot look); askq does not "
                "create a second one",
                code="ambiguous_start",
            )
        items = self.api.call(
            "GET",
            f"conversations/{job.thread_id}/items",
            route="GET /conversations/{conversation_id}/items",
            params={"limit": 1},
        ).json()
        if items.get("data"):
            raise FinalApiError(
                "a response may already exist for this job (a start was interrupted after "
                "sending it); askq does not create a second one",
                code="ambiguous_start",
            )
        return None

    def _body(self, job: JobRecord, items: list[dict[str, Any]]) -> dict[str, Any]:
        request = job.request
        model = request.model or self.model
        if not model:
            raise FinalApiError("no model: set ASKQ_MODEL or give the job a model", code="no_model")
        body: dict[str, Any] = {
            "model": model,
            "input": items,
            "background": True,
            "store": True,
            "metadata": {**request.metadata, "askq_job": job.job_id},
        }
        if job.thread_id is not None:
            body["conversation"] = job.thread_id
        optional = {
            "instructions": request.instructions,
            "temperature": request.temperature,
            "top_p": request.top_p,
            "max_output_tokens": request.max_tokens,
        }
        body.update({key: value for key, value in optional.items() if value is not None})
        tools = self.tool_specs(job)
        if tools:
            body["tools"] = tools
        if request.tool_choice is not None:
            body["tool_choice"] = tool_choice(request.tool_choice)
        return body

    def create_run(self, job: JobRecord) -> Snapshot:
        items = [{"role": m.role, "content": m.content} for m in job.request.conversation()]
        response = self.api.call(
            "POST", "responses", route="POST /responses", json=self._body(job, items)
        )
        return self._snapshot(response.json(), poll_after(response), job.thread_id)

    def poll(self, job: JobRecord) -> Snapshot:
        assert job.run_id is not None
        response = self.api.call(
            "GET", f"responses/{job.run_id}", route="GET /responses/{response_id}"
        )
        return self._snapshot(response.json(), poll_after(response), job.thread_id)

    def submit_tool_outputs(self, job: JobRecord, outputs: list[tuple[str, str]]) -> Snapshot:
        items = [
            {"type": "function_call_output", "call_id": call_id, "output": output}
            for call_id, output in outputs
        ]
        body = self._body(job, items)
        if body.get("tool_choice") not in (None, "none"):
            # the forced call was made; forcing again would loop (Assistants keeps one run)
            body["tool_choice"] = "auto"
        if job.thread_id is None:
            body["previous_response_id"] = job.run_id
        response = self.api.call("POST", "responses", route="POST /responses", json=body)
        return self._snapshot(response.json(), poll_after(response), job.thread_id)

    def _answer(self, response: dict[str, Any]) -> str:
        text = output_text(response)
        self.bounds.check_answer(len(text))
        return text

    def stray_runs(self, job: JobRecord) -> list[str]:
        """The Responses API lists no responses: a stray cannot be found. A retried start on
        a conversation that holds anything fails with `ambiguous_start` instead (find_run),
        so a stray can only come from a creation abandoned with no retry after it."""
        return []

    def cancel(self, job: JobRecord, run_id: str | None = None) -> None:
        run_id = run_id or job.run_id
        assert run_id is not None
        self.api.call(
            "POST", f"responses/{run_id}/cancel", route="POST /responses/{response_id}/cancel"
        )

    def _snapshot(
        self, response: dict[str, Any], hint: float | None, thread: str | None
    ) -> Snapshot:
        status = str(response.get("status"))
        calls = _function_calls(response)
        self.bounds.check_tool_calls(calls)
        if status == "completed" and calls:
            status = "requires_action"
        return Snapshot(
            status=status,
            run_id=str(response["id"]),
            thread_id=thread,
            tool_calls=calls,
            answer=self._answer(response) if status in ("completed", "incomplete") else None,
            usage=token_usage(response.get("usage")),
            error=_error(response),
            poll_after_s=hint,
        )
