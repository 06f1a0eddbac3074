"""Chat completions (placeholder)."""

from __future__ import annotations

from starlette.routing import BaseRoute

CHAT_ROUTES: list[BaseRoute] = []
