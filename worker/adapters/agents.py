"""OpenAI's Agents API sessions (beta, `OpenAI-Beta: agents=v1`), spoken as the official SDK
speaks it (`openai/resources/beta/agents/sessions/`).

A job's thread is a session and its run is a turn. A new session is created with the
question as its input (`environment: {"type": "none"}`: no sandbox, the model only), which
starts its first turn; a job naming a session sends the question as an
`agent.session.input.message` event, which starts the next turn. The API answers neither
request with the turn's id (the event answers 202 with no body), so askq lists the session's
turns to find its own: the first one of a session it created, or the first one after the
newest turn that existed before its message (that turn id is kept as the job's `message_id`
before the message is sent). A turn that is not listed yet makes the start retry.

Exactly-once: creation and every event carry an `Idempotency-Key` derived from the job, so a
start retried after a crash or a lost answer repeats the same request and the server acts on
it once. The SDK offers `idempotency_key` on `events.create` only; askq sends the header on
`sessions.create` too (the Agents API documents it there) and docs/reliability.md says what
that relies on.
"""

from __future__ import annotations

import hashlib
import json
from contextlib import AbstractContextManager
from typing import Any

import httpx

from worker.adapters.base import Bounds, Budget, HttpApi, RequestHook, ToolSpecs, poll_after
from worker.adapters.paging import every_item
from worker.adapters.responses import token_usage
from worker.errors import FinalApiError, RetryableApiError, ThreadBusy
from worker.machine import Snapshot
from worker.models import ErrorInfo, JobRecord, ToolCall

BETA = {"OpenAI-Beta": "agents=v1"}
TURN_PAGE = 20
ENDED = frozenset({"completed", "failed", "cancelled"})
AFTER = "after:"
"""Prefix of `message_id` for a job on a named session: the newest turn before its message."""


def idempotency_key(job: JobRecord, *parts: str) -> dict[str, str]:
    """One key per job and request purpose: retries repeat it, nothing else shares it."""
    return {**BETA, "Idempotency-Key": "-".join(("askq", job.job_id, *parts))}


def _arguments(raw: Any) -> str:
    """The SDK types function-call `arguments` as an object; askq's tools take JSON text."""
    return raw if isinstance(raw, str) else json.dumps(raw if raw is not None else {})


def message_text(item: dict[str, Any]) -> str:
    return "".join(
        part.get("text", "")
        for part in item.get("content") or []
        if part.get("type") == "output_text"
    )


class AgentsAdapter:
    def __init__(
        self,
        client: httpx.Client,
        *,
        agent_id: str,
        model: str,
        tool_specs: ToolSpecs,
        hook: RequestHook | None = None,
        budget: Budget | None = None,
        bounds: Bounds | None = None,
    ) -> None:
        self.api = HttpApi(client, hook, budget, bounds)
        self.bounds = self.api.bounds
        self.agent_id = agent_id
        self.model = model
        self.tool_specs = tool_specs

    def follow_up(self) -> AbstractContextManager[None]:
        return self.api.follow_up()

    # -- starting ---------------------------------------------------------------------

    def _input(self, job: JobRecord) -> list[dict[str, Any]]:
        conversation = job.request.conversation()
        if any(message.role != "user" for message in conversation):
            raise FinalApiError(
                "Agents sessions take user messages only: ask on a session instead of "
                "giving earlier assistant messages",
                code="unsupported_input",
            )
        return [
            {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": message.content}],
            }
            for message in conversation
        ]

    def create_thread(self, job: JobRecord) -> str:
        """Create the session with the question: this starts the job's turn."""
        request = job.request
        agent_id = request.agent_id or self.agent_id
        model = request.model or (None if agent_id else self.model)
        if not agent_id and not model:
            raise FinalApiError(
                "no agent: set ASKQ_AGENT_ID (or ASKQ_MODEL) or give the job an agent_id",
                code="no_agent",
            )
        agent: dict[str, Any] = {}
        if model:
            agent["model"] = model
        if request.instructions is not None:
            agent["instructions"] = request.instructions
        tools = self.tool_specs(job)
        if tools:
            agent["tools"] = tools
        body: dict[str, Any] = {
            "environment": {"type": "none"},
            "input": self._input(job),
            "metadata": {**request.metadata, "askq_job": job.job_id},
        }
        if agent_id:
            body["agent_id"] = agent_id
        if agent:
            body["agent"] = agent
        response = self.api.call(
            "POST",
            "agents/sessions",
            route="POST /agents/sessions",
            json=body,
            headers=idempotency_key(job, "session"),
        )
        return str(response.json()["id"])

    def add_messages(self, job: JobRecord) -> str:
        """A named session: note its newest turn (askq's turn will come after it) and check
        that turn has ended; input to a busy session would steer its active turn."""
        assert job.thread_id is not None
        newest = self._turns(job.thread_id, order="desc", limit=1)
        if newest and newest[0].get("status") not in ENDED:
            raise ThreadBusy(
                f"session {job.thread_id} has an active turn", code="thread_busy", status=400
            )
        return AFTER + (str(newest[0]["id"]) if newest else "")

    def find_run(self, job: JobRecord) -> Snapshot | None:
        assert job.thread_id is not None
        turn = self._own_turn(job)
        return None if turn is None else self._look(job, turn, None)

    def create_run(self, job: JobRecord) -> Snapshot:
        """The turn of a created session exists already; on a named session the question
        goes in as a message event. Either way, the turn is then found by listing."""
        assert job.thread_id is not None
        if not job.thread_created:
            self._send(
                job,
                [{"type": "agent.session.input.message", "input": self._input(job)}],
                "message",
            )
        with self.api.follow_up():
            turn = self._own_turn(job)
        if turn is None:
            raise RetryableApiError(
                f"session {job.thread_id} does not list the new turn yet", code="turn_pending"
            )
        return self._look(job, turn, None)

    def _turns(self, session_id: str, *, order: str, limit: int) -> list[dict[str, Any]]:
        page = self.api.call(
            "GET",
            f"agents/sessions/{session_id}/turns",
            route="GET /agents/sessions/{session_id}/turns",
            params={"order": order, "limit": limit},
            headers=BETA,
        ).json()
        return [t for t in page.get("data") or [] if t.get("subagent_id") is None]

    def _own_turn(self, job: JobRecord) -> dict[str, Any] | None:
        assert job.thread_id is not None
        if job.thread_created:
            first = self._turns(job.thread_id, order="asc", limit=1)
            return first[0] if first else None
        marker = (job.message_id or AFTER).removeprefix(AFTER)
        after: dict[str, Any] | None = None
        for turn in self._turns(job.thread_id, order="desc", limit=TURN_PAGE):
            if turn["id"] == marker:
                break
            after = turn
        return after

    # -- following --------------------------------------------------------------------

    def poll(self, job: JobRecord) -> Snapshot:
        assert job.thread_id is not None and job.run_id is not None
        response = self.api.call(
            "GET",
            f"agents/sessions/{job.thread_id}/turns/{job.run_id}",
            route="GET /agents/sessions/{session_id}/turns/{turn_id}",
            headers=BETA,
        )
        return self._look(job, response.json(), poll_after(response))

    def _look(self, job: JobRecord, turn: dict[str, Any], hint: float | None) -> Snapshot:
        """A turn's status in askq's words; a waiting turn's calls are read from its session,
        a completed turn's answer from its items."""
        status = str(turn.get("status"))
        session_id = str(turn.get("session_id") or job.thread_id)
        answer: str | None = None
        calls: list[ToolCall] = []
        error: ErrorInfo | None = None
        if status == "waiting":
            with self.api.follow_up():
                status, calls, error = self._actions(session_id, str(turn["id"]))
            self.bounds.check_tool_calls(calls)
        elif status == "completed":
            with self.api.follow_up():
                answer = self.answer(session_id, str(turn["id"]))
        elif status == "failed":
            raw = turn.get("error") or {}
            code = str(raw.get("code") or "failed")
            message = str(raw.get("message") or "the turn failed")
            if code == "max_output_tokens":  # the turn ended early: askq's `incomplete`
                status, code = "incomplete", "incomplete"
                with self.api.follow_up():  # what it wrote is kept as the partial answer
                    answer = self.answer(session_id, str(turn["id"]))
            error = ErrorInfo(code=code, message=message)
        return Snapshot(
            status=status,
            run_id=str(turn["id"]),
            thread_id=session_id,
            tool_calls=calls,
            answer=answer,
            usage=token_usage(turn.get("usage")),
            error=error,
            poll_after_s=hint,
        )

    def _actions(
        self, session_id: str, turn_id: str
    ) -> tuple[str, list[ToolCall], ErrorInfo | None]:
        session = self.api.call(
            "GET",
            f"agents/sessions/{session_id}",
            route="GET /agents/sessions/{session_id}",
            headers=BETA,
        ).json()
        actions = [
            a for a in session.get("required_actions") or [] if a.get("turn_id", turn_id) == turn_id
        ]
        calls = [
            ToolCall(id=a["call_id"], name=a["name"], arguments=_arguments(a.get("arguments")))
            for a in actions
            if a.get("type") == "function_call"
        ]
        if calls:
            return "waiting", calls, None
        if actions:
            kinds = ", ".join(sorted({str(a.get("type")) for a in actions}))
            return (
                "failed",
                [],
                ErrorInfo(
                    code="unsupported_action",
                    message=f"the turn waits for {kinds}, which askq cannot answer",
                ),
            )
        return "in_progress", [], None  # the session has not published the action yet

    def answer(self, session_id: str, turn_id: str) -> str:
        """The turn's final assistant messages (not its commentary), oldest first, joined by
        a blank line."""
        items = every_item(
            self.api,
            f"agents/sessions/{session_id}/turns/{turn_id}/items",
            route="GET /agents/sessions/{session_id}/turns/{turn_id}/items",
            params={"order": "asc"},
            headers=BETA,
        )
        texts: list[str] = []
        chars = 0
        for item in items:
            if (
                item.get("type") == "message"
                and item.get("role") == "assistant"
                and item.get("phase") != "commentary"
            ):
                texts.append(message_text(item))
                chars += len(texts[-1])
                self.bounds.check_answer(chars)
        return "\n\n".join(texts)

    def _send(self, job: JobRecord, events: list[dict[str, Any]], *purpose: str) -> None:
        assert job.thread_id is not None
        self.api.call(
            "POST",
            f"agents/sessions/{job.thread_id}/events",
            route="POST /agents/sessions/{session_id}/events",
            json={"events": events},
            headers=idempotency_key(job, *purpose),
        )

    def submit_tool_outputs(self, job: JobRecord, outputs: list[tuple[str, str]]) -> Snapshot:
        """Every output goes as a successful tool result (a failed tool's output already
        tells the model what went wrong); the turn then works on, under the same id."""
        assert job.run_id is not None
        calls = hashlib.sha1(",".join(sorted(c for c, _ in outputs)).encode()).hexdigest()[:16]
        self._send(
            job,
            [
                {
                    "type": "agent.session.input.tool_result",
                    "turn_id": job.run_id,
                    "call_id": call_id,
                    "success": True,
                    "output": output,
                }
                for call_id, output in outputs
            ],
            "tools",
            job.run_id,
            calls,
        )
        return Snapshot(status="in_progress", run_id=job.run_id, thread_id=job.thread_id)

    def stray_runs(self, job: JobRecord) -> list[str]:
        """None can exist: every creation and input carries an Idempotency-Key, so a retry
        after a lost answer is the same request, acted on once by the server."""
        return []

    def cancel(self, job: JobRecord, run_id: str | None = None) -> None:
        """The cancel event names no turn: it cancels the session's active one, which is the
        job's own while the job is live (a stray cannot exist, see `stray_runs`)."""
        turn = run_id or job.run_id
        assert turn is not None
        self._send(job, [{"type": "agent.session.input.cancel"}], "cancel", turn)
