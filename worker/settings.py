"""askq settings: environment variables with the `ASKQ_` prefix, and `.env`.

Secrets (the API key, passwords inside URLs) live only here; tasks receive job ids, never
settings, so nothing secret reaches a broker message, a log line or Flower.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from functools import lru_cache
from typing import Literal
from urllib.parse import parse_qsl, urlencode, urlsplit

from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from worker.errors import ConfigError

LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})
HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
"""An HTTP header name (RFC 9110 token)."""


def is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Settings(BaseSettings):
    """Everything an operator can set. Unknown `ASKQ_` variables and `.env` entries are ignored
    (a shared `.env` must never stop a worker from starting)."""

    model_config = SettingsConfigDict(
        env_prefix="ASKQ_", env_file=".env", extra="ignore", frozen=True
    )

    redis_url: str = "redis://localhost:6379/0"
    api_base: str = "http://127.0.0.1:8787/v1"
    api_key: SecretStr = SecretStr("")
    api_query: str = ""
    """Query parameters added to every API request (`k=v&k2=v2`), e.g. Azure's api-version."""
    api_key_header: str = ""
    """The header that carries the key as it is (Azure: `api-key`); empty: Authorization
    Bearer."""
    api_style: Literal["assistants", "responses", "agents"] = "assistants"
    assistant_id: str = ""
    agent_id: str = ""
    model: str = ""
    tool_modules: str = ""
    responses_conversations: Literal["auto", "on", "off"] = "auto"
    """Responses style: keep each job's items in a Conversation (`on`), chain them with
    previous_response_id (`off`), or use conversations until the server answers 404 (`auto`)."""
    max_inflight: int = Field(default=256, ge=1)
    rate_limit_rpm: int = Field(default=0, ge=0)
    poll_min_s: float = Field(default=0.5, gt=0)
    poll_max_s: float = Field(default=8.0, gt=0)
    poll_predict: bool = True
    job_timeout_s: float = Field(default=3600, gt=0)
    result_ttl_s: int = Field(default=604800, ge=1)
    max_question_chars: int = Field(default=256_000, ge=1)
    """Longest question (or message) accepted: the Assistants API's limit on a message."""

    key_prefix: str = Field(default="askq", min_length=1)
    http_timeout_s: float = Field(default=30.0, gt=0)
    max_api_retries: int = Field(default=8, ge=0)
    tool_timeout_s: float = Field(default=30.0, gt=0)
    sweep_interval_s: float = Field(default=2.0, gt=0)
    max_jobs_per_message: int = Field(default=16, ge=1)
    """Most jobs the pump packs into one task message when many of one task are due at
    once (1: one job a message, as before). Light load always gets one job a message."""
    lease_margin_s: float = Field(default=5.0, gt=0)
    heartbeat_file: str = ""
    request_deadline_s: float = Field(default=60.0, gt=0)
    heartbeat_s: float = Field(default=1.0, gt=0)
    worker_dead_after_s: float = Field(default=3.0, gt=0)
    redis_high_water_pct: float = Field(default=90.0, gt=0, le=100)
    max_response_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    max_answer_pages: int = Field(default=20, ge=1)
    max_answer_chars: int = Field(default=1_000_000, ge=1)
    max_tool_calls: int = Field(default=32, ge=1)
    max_tool_argument_bytes: int = Field(default=256 * 1024, ge=1)

    webhook_secret: SecretStr = SecretStr("")
    """The provider's `whsec_...` signing secret: setting it turns webhooks on."""
    webhook_poll_s: float = Field(default=60.0, gt=0)
    """With webhooks on, polls are a safety net for lost webhooks: one look this often."""

    callback_queue: str = Field(default="celery", min_length=1)
    """The Celery queue `on_done` / `on_batch_done` tasks are sent to (the user's workers
    consume it; Celery's default queue is `celery`)."""
    callback_secret: SecretStr = SecretStr("")
    """The `whsec_...` secret askq signs its webhooks to users with (Standard Webhooks)."""
    callback_retry_s: float = Field(default=86400.0, gt=0)
    """How long a webhook to a user is retried (with back-off) before askq gives up."""

    @field_validator("api_base")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        if urlsplit(value).scheme not in ("http", "https"):
            raise ValueError(f"ASKQ_API_BASE must be an http(s) URL, got {value!r}")
        return value.rstrip("/")

    @field_validator("api_query")
    @classmethod
    def _query(cls, value: str) -> str:
        try:
            parse_qsl(value.lstrip("?"), keep_blank_values=True, strict_parsing=bool(value))
        except ValueError:
            raise ValueError(f"ASKQ_API_QUERY must look like k=v&k2=v2, got {value!r}") from None
        return value.lstrip("?")

    @field_validator("api_key_header")
    @classmethod
    def _header(cls, value: str) -> str:
        if value and not HEADER_NAME.fullmatch(value):
            raise ValueError(f"ASKQ_API_KEY_HEADER is not a header name: {value!r}")
        return value

    @field_validator("webhook_secret", "callback_secret")
    @classmethod
    def _whsec(cls, value: SecretStr, info: ValidationInfo) -> SecretStr:
        secret = value.get_secret_value()
        if secret:
            try:
                decoded = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
            except (ValueError, binascii.Error):
                decoded = b""
            if not decoded:
                name = f"ASKQ_{(info.field_name or '').upper()}"
                raise ValueError(f"{name} must be a whsec_... secret (base64)")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ValueError("ASKQ_REDIS_URL must start with redis://, rediss:// or unix://")
        if parts.scheme == "unix" and not parts.path:
            raise ValueError(
                "ASKQ_REDIS_URL: unix:// needs a socket path (unix:///path/redis.sock)"
            )
        try:
            parts.port  # noqa: B018 - parsing it is the check
        except ValueError:
            # never echo the parser's message: it quotes the text it took for a port, which
            # is part of the password when the password holds '/', '@' or ':'
            raise ValueError(
                "ASKQ_REDIS_URL has a bad port (percent-encode '/', '@' and ':' in a password)"
            ) from None
        if parts.scheme != "unix" and (not parts.hostname or "@" in parts.path):
            # `redis://:pa/ss@host` parses as host '' and path '/ss@host': the host would be
            # localhost and a piece of the password would travel as a database name
            raise ValueError(
                "ASKQ_REDIS_URL has no host (percent-encode '/', '@' and ':' in a password)"
            )
        return value

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if not self.api_key.get_secret_value() and not is_loopback(self.api_base):
            raise ValueError(
                f"ASKQ_API_KEY is required when ASKQ_API_BASE is not on this machine "
                f"({self.api_base})"
            )
        if self.poll_min_s > self.poll_max_s:
            raise ValueError("ASKQ_POLL_MIN_S must not exceed ASKQ_POLL_MAX_S")
        if self.webhooks_on and self.api_style == "assistants":
            raise ValueError(
                "ASKQ_WEBHOOK_SECRET: providers send webhooks for responses and agents "
                "sessions only (ASKQ_API_STYLE=responses or agents), never for Assistants runs"
            )
        return self

    @property
    def webhooks_on(self) -> bool:
        return bool(self.webhook_secret.get_secret_value())

    @property
    def predicts_polls(self) -> bool:
        """Learned run durations time the first look, unless webhooks say when runs end."""
        return self.poll_predict and not self.webhooks_on

    @property
    def api_params(self) -> dict[str, str]:
        return dict(parse_qsl(self.api_query, keep_blank_values=True))

    @property
    def broker_url(self) -> str:
        """`redis_url` as kombu spells it. redis-py's `unix:///path?db=N` is kombu's
        `redis+socket:///path?virtual_host=N`; other URLs are the same for both."""
        parts = urlsplit(self.redis_url)
        if parts.scheme != "unix":
            return self.redis_url
        query = [("virtual_host" if k == "db" else k, v) for k, v in parse_qsl(parts.query)]
        tail = f"?{urlencode(query)}" if query else ""
        return f"redis+socket://{parts.netloc}{parts.path}{tail}"

    @property
    def tool_module_names(self) -> list[str]:
        return [name.strip() for name in self.tool_modules.split(",") if name.strip()]

    @property
    def lease_s(self) -> float:
        """How long a published task message may stay untaken before the pump publishes it
        again (it was lost, or its worker died before taking it). Once taken, the task's
        lease lives as long as its worker's heartbeat, up to `task_bound_s`."""
        return 2 * self.http_timeout_s + self.lease_margin_s

    @property
    def queued_bound_s(self) -> float:
        """How long a published message may wait in a busy queue before the pump publishes
        its job again anyway (the message was lost while the queue stayed busy): under a
        backlog polls come later, never twice, and never not at all."""
        return 5 * self.lease_s

    @property
    def held_lease_s(self) -> float:
        """The lease of a task that has taken its message: short, because its worker's
        heartbeat renews it while the task runs; when the task ends without a save (Redis
        full or away), its job comes back this soon instead of a whole lease later."""
        return self.worker_dead_after_s + self.heartbeat_s + self.lease_margin_s

    @property
    def task_bound_s(self) -> float:
        """The longest a task can legitimately run: the most API requests one task makes
        (a start's thread, look-up and run, or a poll and every answer page), each within
        the request deadline, plus its tools. A task on a live worker past this is stuck:
        its job goes to another worker and the stuck task's saves are refused (fencing)."""
        requests = 3 + self.max_answer_pages
        return requests * self.request_deadline_s + self.tool_timeout_s + self.lease_margin_s


def load_settings(**overrides: object) -> Settings:
    """Read settings, turning a validation failure into one readable `ConfigError` line."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        where = f"ASKQ_{field.upper()}: " if field else ""
        message = str(first["msg"]).removeprefix("Value error, ")
        raise ConfigError(f"invalid settings: {where}{message}") from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return load_settings()
