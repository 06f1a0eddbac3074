"""Reading a whole cursor-paged list (`data`, `has_more`, `last_id`, `after=`), as the
Assistants messages and Agents turn items lists page."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from worker.adapters.base import HttpApi

PAGE_LIMIT = 100


def every_item(
    api: HttpApi, path: str, *, route: str, params: dict[str, Any], headers: dict[str, str]
) -> Iterator[dict[str, Any]]:
    """Every item of the list, page after page, in the order `params` asks for; at most
    ASKQ_MAX_ANSWER_PAGES pages (`OverLimit`: a server whose cursor never ends)."""
    after: str | None = None
    pages = 0
    while True:
        api.bounds.check_pages(pages)
        pages += 1
        query = {**params, "limit": PAGE_LIMIT, **({"after": after} if after else {})}
        page = api.call("GET", path, route=route, params=query, headers=headers).json()
        yield from page.get("data") or []
        if not page.get("has_more") or not page.get("last_id"):
            return
        after = page["last_id"]
