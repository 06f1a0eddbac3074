"""Helpers shared by the emulator tests (a uniquely named module, not conftest, so it imports)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import httpx

T = TypeVar("T")
BETA = {"OpenAI-Beta": "assistants=v2"}


def wait_until(check: Callable[[], T | None], timeout: float = 5.0, interval: float = 0.01) -> T:
    """Poll `check` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last value {value!r})")
        time.sleep(interval)


def question_run(api: httpx.Client, text: str, **fields: Any) -> dict[str, Any]:
    """POST /threads/runs with one user message; returns the run object."""
    body = {
        "assistant_id": "asst_test",
        "thread": {"messages": [{"role": "user", "content": text}]},
    }
    reply = api.post("/threads/runs", json=body | fields)
    assert reply.status_code == 200, reply.text
    return reply.json()  # type: ignore[no-any-return]


def get_run(api: httpx.Client, run: dict[str, Any]) -> dict[str, Any]:
    reply = api.get(f"/threads/{run['thread_id']}/runs/{run['id']}")
    assert reply.status_code == 200, reply.text
    return reply.json()  # type: ignore[no-any-return]


def wait_status(
    api: httpx.Client, run: dict[str, Any], statuses: set[str], timeout: float = 5.0
) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        current = get_run(api, run)
        return current if current["status"] in statuses else None

    return wait_until(check, timeout)


def thread_texts(api: httpx.Client, thread_id: str, **params: Any) -> list[str]:
    reply = api.get(f"/threads/{thread_id}/messages", params={"order": "asc", **params})
    assert reply.status_code == 200, reply.text
    return [m["content"][0]["text"]["value"] for m in reply.json()["data"]]
