"""Agents API sessions and turns: records and their lazy progress (no timers).

A session runs one turn at a time. A turn is `queued` for a tenth of its run time, then
`in_progress`; when its work ends it either asks for function calls (turn `waiting`,
session `requires_action` with one `function_call` required action per call) or ends
`completed`, `failed` or `cancelled` (session `idle`). Shapes follow the official SDK:
`openai/types/beta/agent_session.py` and `openai/types/beta/agents/sessions/turn.py`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from emulator.engine import Plan, Script, ToolCall, new_id
from emulator.state import EmulatorState, queued_for

ENDED = frozenset({"completed", "failed", "cancelled"})

# The scripted outcomes have no turn status of their own: the SDK's turn ends `completed`,
# `failed` or `cancelled`, and names why a turn failed in `error.code`.
FAILURE_CODES = {
    "failed": ("server_error", "The askq emulator failed this turn as asked by the [fail] tag."),
    "incomplete": ("max_output_tokens", "The model reached its output token limit."),
    "expired": ("request_timeout", "The askq emulator timed this turn out ([expire] tag)."),
}


def usage_dict(prompt: int, completion: int) -> dict[str, Any]:
    """`TokenUsage` (openai/types/beta/token_usage.py)."""
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt + completion,
    }


def agent_config(agent_id: str, model: str, body: dict[str, Any]) -> dict[str, Any]:
    """The session's `agent` (openai/types/beta/agent_session.py `Agent`)."""
    return {
        "id": agent_id,
        "instructions": body.get("instructions"),
        "model": model,
        "multi_agent": {"enabled": False, "max_concurrent_subagents": None},
        "name": body.get("name"),
        "reasoning": {"effort": None, "summary": None},
        "service_tier": body.get("service_tier") or "auto",
        "text": {"format": {"type": "text"}, "verbosity": "medium"},
        "tools": [
            {"defer_loading": False, **tool} if tool.get("type") == "function" else tool
            for tool in body.get("tools") or []
        ],
        "compaction": None,
        "experimental": None,
    }


@dataclass(eq=False)
class Turn:
    id: str
    session: Session
    created: float
    script: Script
    run_time: float
    queued_until: float
    work_end: float
    plan: Plan
    phase: str = "work"  # work | waiting | done
    status: str = "queued"
    started_at: int | None = None
    completed_at: int | None = None
    error: dict[str, str] | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    pending_calls: list[ToolCall] = field(default_factory=list)
    tool_results: list[tuple[str, str]] = field(default_factory=list)
    announced: str = ""
    """The turn status last announced by a webhook."""

    def predicted_end(self) -> float:
        return self.work_end if self.phase == "work" else math.inf

    def to_dict(self) -> dict[str, Any]:
        usage = None
        if self.phase == "done":
            usage = usage_dict(self.prompt_tokens, self.completion_tokens)
        return {
            "id": self.id,
            "object": "agent.session.turn",
            "agent_id": self.session.agent["id"],
            "session_id": self.session.id,
            "created_at": int(self.created),
            "started_at": self.started_at,
            "completed_at": self.completed_at,
            "status": self.status,
            "error": self.error,
            "subagent_id": None,
            "usage": usage,
            "prompt_cache_options": None,
        }


@dataclass(eq=False)
class Session:
    id: str
    created_at: int
    agent: dict[str, Any]
    metadata: dict[str, str]
    last_active_at: float
    turns: list[Turn] = field(default_factory=list)
    items: list[dict[str, Any]] = field(default_factory=list)

    @property
    def active(self) -> Turn | None:
        if self.turns and self.turns[-1].phase != "done":
            return self.turns[-1]
        return None

    def status(self) -> str:
        active = self.active
        if active is None:
            return "idle"
        return "requires_action" if active.phase == "waiting" else "in_progress"

    def required_actions(self) -> list[dict[str, Any]]:
        active = self.active
        if active is None or active.phase != "waiting":
            return []
        return [
            {
                "type": "function_call",
                "call_id": call.id,
                "name": call.name,
                "arguments": json.loads(call.arguments),
                "turn_id": active.id,
            }
            for call in active.pending_calls
        ]

    def to_dict(self) -> dict[str, Any]:
        ended = [t for t in self.turns if t.phase == "done"]
        usage = None
        if ended:
            usage = usage_dict(
                sum(t.prompt_tokens for t in ended), sum(t.completion_tokens for t in ended)
            )
        return {
            "id": self.id,
            "object": "agent.session",
            "agent": self.agent,
            "created_at": self.created_at,
            "environment": {"type": "none"},
            "error": None,
            "last_active_at": int(self.last_active_at),
            "metadata": self.metadata,
            "required_actions": self.required_actions(),
            "status": self.status(),
            "usage": usage,
            "vault_ids": [],
            "prompt_cache_options": None,
            "review": None,
        }


def message_item(turn: Turn, role: str, text: str, status: str = "completed") -> dict[str, Any]:
    """`AgentSessionMessage` (openai/types/beta/agent_session_message.py)."""
    return {
        "id": new_id("msg_"),
        "type": "message",
        "role": role,
        "content": [{"type": "input_text" if role == "user" else "output_text", "text": text}],
        "phase": "final_answer" if role == "assistant" else None,
        "status": status,
        "turn_id": turn.id,
    }


def new_turn(
    state: EmulatorState,
    session: Session,
    script: Script,
    plan: Plan,
    now: float,
    metadata: dict[str, str] | None,
) -> Turn:
    """A turn starts; `metadata` names the job it belongs to (a session's first turn)."""
    run_time = state.config.run_time_s if script.run_time_s is None else script.run_time_s
    turn = Turn(
        id=new_id("turn_"),
        session=session,
        created=now,
        script=script,
        run_time=run_time,
        queued_until=now + queued_for(run_time),
        work_end=math.inf,
        plan=plan,
    )
    if plan.outcome != "never" or plan.tool_calls:
        turn.work_end = now + run_time
    session.turns.append(turn)
    session.last_active_at = now
    state.stats.runs_created += 1
    state.stats.run_created(turn.id, metadata, turn.predicted_end(), now)
    return turn


def resume(state: EmulatorState, turn: Turn, plan: Plan, now: float) -> None:
    """All requested function results are in: the turn works again."""
    turn.phase, turn.status, turn.plan = "work", "queued", plan
    turn.pending_calls = []
    turn.queued_until = now + queued_for(turn.run_time)
    turn.work_end = math.inf if plan.outcome == "never" else now + turn.run_time
    turn.session.last_active_at = now
    state.stats.tracker.move_end(turn.id, turn.predicted_end(), now)


def finish(state: EmulatorState, turn: Turn, status: str, at: float) -> None:
    turn.phase, turn.status, turn.completed_at = "done", status, int(at)
    turn.pending_calls = []
    plan = turn.plan
    session = turn.session
    session.last_active_at = max(session.last_active_at, at)
    if status == "failed" and plan.outcome in FAILURE_CODES:
        code, message = FAILURE_CODES[plan.outcome]
        turn.error = {"code": code, "message": plan.error_message or message}
    if status in ("completed", "failed") and plan.outcome in ("completed", "incomplete"):
        item_status = "completed" if plan.outcome == "completed" else "incomplete"
        session.items.extend(message_item(turn, "assistant", a, item_status) for a in plan.answers)
    state.stats.tracker.move_end(turn.id, at, at)


def advance(state: EmulatorState, turn: Turn, now: float) -> None:
    """Apply every transition the clock has passed since the last look."""
    if turn.phase != "work":
        return
    if now < turn.queued_until:
        turn.status = "queued"
        return
    if turn.started_at is None:
        turn.started_at = int(turn.queued_until)
    if now < turn.work_end:
        turn.status = "in_progress"
        return
    plan, at = turn.plan, turn.work_end
    turn.prompt_tokens += plan.prompt_tokens
    turn.completion_tokens += plan.completion_tokens
    if plan.tool_calls:
        turn.phase, turn.status = "waiting", "waiting"
        turn.pending_calls = list(plan.tool_calls)
        turn.session.items.extend(
            {
                "id": new_id("fc_"),
                "type": "function_call",
                "call_id": call.id,
                "name": call.name,
                "arguments": json.loads(call.arguments),
                "status": "completed",
                "turn_id": turn.id,
            }
            for call in plan.tool_calls
        )
        state.stats.tracker.move_end(turn.id, math.inf, at)
        return
    finish(state, turn, "completed" if plan.outcome == "completed" else "failed", at)


def settle(state: EmulatorState, session: Session, now: float) -> None:
    if session.turns:
        advance(state, session.turns[-1], now)


def announce(state: EmulatorState, turn: Turn) -> tuple[str, dict[str, Any]] | None:
    """The session webhook event for what the turn just did (each status once):
    `agent.session.action_required` when it waits, `agent.session.idle` when it ended."""
    advance(state, turn, state.now())
    if turn.status == turn.announced or turn.status not in ("waiting", *ENDED):
        return None
    turn.announced = turn.status
    session_id = turn.session.id
    if turn.status == "waiting":
        data = {"id": session_id, "required_action": {"type": "function_call"}}
        return "agent.session.action_required", data
    return "agent.session.idle", {"id": session_id, "environment_type": "none"}


def watch(state: EmulatorState, turn: Turn) -> None:
    """The turn works: announce it, and look again when its work ends."""
    turn.announced = turn.status
    state.webhooks.now(
        ("agent.session.in_progress", {"id": turn.session.id, "environment_type": "none"})
    )
    state.webhooks.at(turn.work_end, lambda: announce(state, turn))
