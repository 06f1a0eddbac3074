"""Emulator configuration: one pydantic model, changeable at run time (PATCH /_emulator/config)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


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
    # Slow answers (a third draw, made only when one of these is set): the work is done and
    # the headers sent, then the body trickles one byte every trickle_byte_s for trickle_s
    # (the rest follows at once), or stalls for stall_after_headers_s.
    trickle: float = Field(0.0, ge=0, le=1)
    trickle_s: float = Field(12.0, ge=0)
    trickle_byte_s: float = Field(0.5, gt=0)
    stall_after_headers: float = Field(0.0, ge=0, le=1)
    stall_after_headers_s: float = Field(5.0, ge=0)
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
    # Each bridge field below is read when a request goes upstream, so a PATCH applies to the
    # next request. The whole upstream call (a long generation included) must end within this.
    upstream_timeout_s: float = Field(120.0, gt=0)
    # Output cap for runs that set none (max_completion_tokens / max_output_tokens): a small
    # model's runaway answer otherwise holds a server slot until the timeout.
    upstream_max_tokens: int | None = Field(1024, ge=1)
    # Most upstream requests at once (None: no limit); runs beyond it wait, still cancellable.
    upstream_concurrency: int | None = Field(None, ge=1)
    # Merged into every upstream request: template hints such as
    # {"chat_template_kwargs": {"enable_thinking": false}} (llama.cpp, vLLM) or Ollama options.
    upstream_extra_body: dict[str, Any] = Field(default_factory=dict)
    # Keep threads, runs and responses in this Redis (under state_prefix) so a restarted
    # bridge goes on with them; None keeps them in memory only.
    state_redis_url: str | None = None
    state_prefix: str = "askq-bridge:"
    state_ttl_s: int = Field(604800, ge=1)

    @field_validator("upstream_extra_body", mode="before")
    @classmethod
    def _json_object(cls, value: Any) -> Any:
        """Command lines give JSON text."""
        return json.loads(value) if isinstance(value, str) else value


OPTION_ALIASES = {
    "run_time_s": ["--run-time"],
    "cancel_time_s": ["--cancel-time"],
    "requires_action_timeout_s": ["--requires-action-timeout"],
    "retry_after_s": ["--retry-after"],
    "upstream_url": ["--upstream"],
    "fault_paths": ["--fault-path"],
}
"""Short spellings, besides `--field-name`, for the options people type most."""


def option_flags(name: str) -> list[str]:
    """Every command-line spelling of one config field (both CLIs take every field)."""
    return [f"--{name.replace('_', '-')}", *OPTION_ALIASES.get(name, [])]


def config_from_options(
    values: Mapping[str, Any], base: Mapping[str, Any] | None = None
) -> EmulatorConfig:
    """A config from command-line values (text; `none` for None) over `base`; unset is None."""
    fields: dict[str, Any] = dict(base or {})
    for name in EmulatorConfig.model_fields:
        value = values.get(name)
        if value is None or value == ():
            continue
        if isinstance(value, tuple | list):
            fields[name] = list(value)
        else:
            fields[name] = None if value == "none" else value
    return EmulatorConfig.model_validate(fields)
