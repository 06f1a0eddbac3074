"""Responses API (placeholder while the Assistants part lands)."""

from __future__ import annotations

from starlette.routing import BaseRoute

RESPONSES_ROUTES: list[BaseRoute] = []


class ResponseRecord:
    pass


class Conversation:
    pass
