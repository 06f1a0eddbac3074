"""Assistants v2 (threads / messages / runs), spoken as the official SDK speaks it.

Exactly-once runs (invariant 3): a job on a new thread first creates the thread with its
messages and the task records the thread id; only then is the run created, carrying
`metadata.askq_job`. A start that finds a recorded thread but no run id lists that thread's
runs and adopts its own. `POST /threads/runs` would save one request but leave nothing to
list after a crash between the POST and the write that records its answer.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import replace
from typing import Any

import httpx

from worker.adapters.base import Bounds, Budget, HttpApi, RequestHook, ToolSpecs, poll_after
from worker.adapters.paging import every_item
from worker.errors import FinalApiError
from worker.machine import Snapshot
from worker.models import TOOL_CHOICE_MODES, ErrorInfo, JobRecord, ToolCall, Usage

BETA = {"OpenAI-Beta": "assistants=v2"}
TEXT_STATUSES = frozenset({"completed", "incomplete"})
"""Runs whose messages hold text worth reading: an incomplete run's part is billed too."""
RUN_LIST_LIMIT = 100
ABANDONED = ("cancelling", "cancelled")
"""Runs askq gave up on (a task that lost its claim cancels the run it could not record):
never adopted, and never counted as strays."""
DONE = ("completed", "failed", "incomplete", "expired")


def _usage(raw: dict[str, Any] | None) -> Usage | None:
    if not raw:
        return None
    return Usage(
        prompt_tokens=int(raw.get("prompt_tokens") or 0),
        completion_tokens=int(raw.get("completion_tokens") or 0),
        total_tokens=int(raw.get("total_tokens") or 0),
    )


def _error(run: dict[str, Any]) -> ErrorInfo | None:
    status = run.get("status")
    if status == "failed":
        last = run.get("last_error") or {}
        return ErrorInfo(
            code=str(last.get("code") or "failed"),
            message=str(last.get("message") or "the run failed"),
        )
    if status == "incomplete":
        details = run.get("incomplete_details") or {}
        reason = str(details.get("reason") or "unknown")
        return ErrorInfo(code="incomplete", message=f"the run ended early: {reason}")
    if status == "expired":
        return ErrorInfo(code="expired", message="the run expired on the server")
    return None


def _tool_calls(run: dict[str, Any]) -> list[ToolCall]:
    action = run.get("required_action") or {}
    calls = (action.get("submit_tool_outputs") or {}).get("tool_calls") or []
    return [
        ToolCall(
            id=call["id"],
            name=call["function"]["name"],
            arguments=call["function"].get("arguments") or "{}",
        )
        for call in calls
        if call.get("type", "function") == "function"
    ]


def tool_choice(choice: str) -> str | dict[str, Any]:
    """A job's tool_choice as AssistantToolChoiceOption: a mode, or one named function."""
    if choice in TOOL_CHOICE_MODES:
        return choice
    return {"type": "function", "function": {"name": choice}}


def message_text(message: dict[str, Any]) -> str:
    parts = [
        part["text"]["value"]
        for part in message.get("content") or []
        if part.get("type") == "text" and isinstance(part.get("text"), dict)
    ]
    return "".join(parts)


class AssistantsAdapter:
    def __init__(
        self,
        client: httpx.Client,
        *,
        assistant_id: str,
        tool_specs: ToolSpecs,
        hook: RequestHook | None = None,
        budget: Budget | None = None,
        bounds: Bounds | None = None,
    ) -> None:
        self.api = HttpApi(client, hook, budget, bounds)
        self.bounds = self.api.bounds
        self.assistant_id = assistant_id
        self.tool_specs = tool_specs

    # -- starting ---------------------------------------------------------------------

    def follow_up(self) -> AbstractContextManager[None]:
        return self.api.follow_up()

    def create_thread(self, job: JobRecord) -> str:
        body = {
            "messages": [
                {"role": m.role, "content": m.content} for m in job.request.conversation()
            ],
            "metadata": {"askq_job": job.job_id},
        }
        response = self.api.call("POST", "threads", route="POST /threads", json=body, headers=BETA)
        return str(response.json()["id"])

    def add_messages(self, job: JobRecord) -> str:
        assert job.thread_id is not None
        message_id = ""
        for index, message in enumerate(job.request.conversation()):
            # one budget check for the whole conversation: a refusal half-way would make the
            # retry add the first messages twice
            with self.api.follow_up() if index else nullcontext():
                response = self.api.call(
                    "POST",
                    f"threads/{job.thread_id}/messages",
                    route="POST /threads/{thread_id}/messages",
                    json={
                        "role": message.role,
                        "content": message.content,
                        "metadata": {"askq_job": job.job_id},
                    },
                    headers=BETA,
                )
            message_id = str(response.json()["id"])
        return message_id

    def _own_runs(self, job: JobRecord) -> list[dict[str, Any]]:
        """This job's runs on its thread (newest first), by their `askq_job` metadata."""
        assert job.thread_id is not None
        response = self.api.call(
            "GET",
            f"threads/{job.thread_id}/runs",
            route="GET /threads/{thread_id}/runs",
            params={"limit": RUN_LIST_LIMIT, "order": "desc"},
            headers=BETA,
        )
        return [
            run
            for run in response.json().get("data") or []
            if (run.get("metadata") or {}).get("askq_job") == job.job_id
        ]

    def stray_runs(self, job: JobRecord) -> list[str]:
        """Runs of this job other than the recorded one that are still live: a creation askq
        gave up on (deadline, lost connection) that the server carried out anyway."""
        return [
            str(run["id"])
            for run in self._own_runs(job)
            if run["id"] not in job.run_ids and run.get("status") not in (*ABANDONED, *DONE)
        ]

    def find_run(self, job: JobRecord) -> Snapshot | None:
        assert job.thread_id is not None
        for run in self._own_runs(job):
            if run.get("status") not in ABANDONED:
                snap = self._snapshot(run, None)
                if run.get("status") == "completed":
                    # adopted after the run ended: its answer is read now, as a poll would
                    with self.api.follow_up():
                        snap = replace(snap, answer=self.answer(job.thread_id, run["id"]))
                return snap
        return None

    def create_run(self, job: JobRecord) -> Snapshot:
        assert job.thread_id is not None
        request = job.request
        assistant = request.assistant_id or self.assistant_id
        if not assistant:
            raise FinalApiError(
                "no assistant: set ASKQ_ASSISTANT_ID or give the job an assistant_id",
                code="no_assistant",
            )
        body: dict[str, Any] = {
            "assistant_id": assistant,
            "metadata": {**request.metadata, "askq_job": job.job_id},
        }
        optional = {
            "model": request.model,
            "instructions": request.instructions,
            "temperature": request.temperature,
            "top_p": request.top_p,
            "max_completion_tokens": request.max_tokens,
        }
        body.update({key: value for key, value in optional.items() if value is not None})
        tools = self.tool_specs(job)
        if tools:
            body["tools"] = tools
        if request.tool_choice is not None:
            body["tool_choice"] = tool_choice(request.tool_choice)
        response = self.api.call(
            "POST",
            f"threads/{job.thread_id}/runs",
            route="POST /threads/{thread_id}/runs",
            json=body,
            headers=BETA,
        )
        return self._snapshot(response.json(), poll_after(response))

    # -- following --------------------------------------------------------------------

    def poll(self, job: JobRecord) -> Snapshot:
        assert job.thread_id is not None and job.run_id is not None
        response = self.api.call(
            "GET",
            f"threads/{job.thread_id}/runs/{job.run_id}",
            route="GET /threads/{thread_id}/runs/{run_id}",
            headers=BETA,
        )
        run = response.json()
        snap = self._snapshot(run, poll_after(response))
        if run.get("status") in TEXT_STATUSES:
            with self.api.follow_up():
                answer = self.answer(job.thread_id, run["id"])
            return replace(snap, answer=answer)
        return snap

    def answer(self, thread_id: str, run_id: str) -> str:
        """The run's own assistant messages, oldest first, joined by a blank line: never
        "the newest message on the thread", which may belong to another run. Bounded in
        pages (`every_item`) and characters (`OverLimit`), so an endless `has_more` ends."""
        messages = every_item(
            self.api,
            f"threads/{thread_id}/messages",
            route="GET /threads/{thread_id}/messages",
            params={"run_id": run_id, "order": "asc"},
            headers=BETA,
        )
        texts: list[str] = []
        chars = 0
        for message in messages:
            if message.get("role") == "assistant":
                texts.append(message_text(message))
                chars += len(texts[-1])
                self.bounds.check_answer(chars)
        return "\n\n".join(texts)

    def submit_tool_outputs(self, job: JobRecord, outputs: list[tuple[str, str]]) -> Snapshot:
        assert job.thread_id is not None and job.run_id is not None
        response = self.api.call(
            "POST",
            f"threads/{job.thread_id}/runs/{job.run_id}/submit_tool_outputs",
            route="POST /threads/{thread_id}/runs/{run_id}/submit_tool_outputs",
            json={
                "tool_outputs": [
                    {"tool_call_id": call_id, "output": output} for call_id, output in outputs
                ]
            },
            headers=BETA,
        )
        return self._snapshot(response.json(), poll_after(response))

    def cancel(self, job: JobRecord, run_id: str | None = None) -> None:
        """Cancel the job's run (or another run of the job: a stray)."""
        run_id = run_id or job.run_id
        assert job.thread_id is not None and run_id is not None
        self.api.call(
            "POST",
            f"threads/{job.thread_id}/runs/{run_id}/cancel",
            route="POST /threads/{thread_id}/runs/{run_id}/cancel",
            headers=BETA,
        )

    def _snapshot(self, run: dict[str, Any], hint: float | None) -> Snapshot:
        calls = _tool_calls(run)
        self.bounds.check_tool_calls(calls)
        return Snapshot(
            status=str(run.get("status")),
            run_id=str(run["id"]),
            thread_id=run.get("thread_id"),
            tool_calls=calls,
            usage=_usage(run.get("usage")),
            error=_error(run),
            poll_after_s=hint,
        )
