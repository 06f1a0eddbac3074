"""Emulator configuration: one pydantic model, changeable at run time (PATCH /_emulator/config)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class EmulatorConfig(BaseModel):
    """Everything that shapes the emulator's behaviour.

    Timing fields apply to runs and responses created after a change; fault fractions apply
    to every later ``/v1`` request (never to ``/_emulator`` control routes).
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    engine: Literal["scripted", "chat"] = "scripted"
    # queued -> in_progress -> terminal takes this long; the first tenth (at most 50 ms) is queued.
    run_time_s: float = Field(0.2, ge=0)
    cancel_time_s: float = Field(0.05, ge=0)
    # When set, GET run / GET response answer with the `openai-poll-after-ms` header.
    poll_after_ms: int | None = Field(None, ge=0)
    # A run left in requires_action this long past entering it becomes `expired`.
    requires_action_timeout_s: float = Field(600.0, ge=0)

    # Fault injection: fractions of /v1 requests, drawn from one seeded RNG.
    fail_429: float = Field(0.0, ge=0, le=1)
    fail_500: float = Field(0.0, ge=0, le=1)
    slow: float = Field(0.0, ge=0, le=1)
    slow_s: float = Field(2.0, ge=0)
    drop: float = Field(0.0, ge=0, le=1)
    lost_response: float = Field(0.0, ge=0, le=1)
    retry_after_s: float = Field(1.0, ge=0)
    # Restrict faults to some routes: entries are a method ("POST"), a route template
    # ("/v1/threads/{thread_id}/runs"), "METHOD template", or fnmatch patterns of either.
    # Empty means every /v1 route.
    fault_paths: list[str] = Field(default_factory=list)
    seed: int | None = None

    # A Responses server without /v1/conversations (vLLM, LiteLLM): those routes answer 404.
    conversations: bool = True

    # Azure's dialect: every /v1 request must carry these query parameters (`k=v&k2=v2`, e.g.
    # `api-version=2025-04-01-preview`) and its key in this header (e.g. `api-key`).
    require_query: str = ""
    require_key_header: str = ""

    # Webhooks: when a response or session turn ends (or asks for function calls), POST a
    # signed event (Standard Webhooks, as OpenAI signs them) to this URL. Fractions of the
    # events are dropped, delivered twice, or delivered `webhook_delay_s` late.
    webhook_url: str | None = None
    webhook_secret: str | None = None
    webhook_drop: float = Field(0.0, ge=0, le=1)
    webhook_duplicate: float = Field(0.0, ge=0, le=1)
    webhook_delay: float = Field(0.0, ge=0, le=1)
    webhook_delay_s: float = Field(2.0, ge=0)

    # Chat engine: an OpenAI-compatible server whose /chat/completions answers every run.
    upstream_url: str | None = None
    upstream_api_key: str | None = None
    upstream_model: str | None = None
    upstream_timeout_s: float = Field(120.0, gt=0)
