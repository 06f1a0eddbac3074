"""Tools the integration tests register in their workers (ASKQ_TOOL_MODULES)."""

from __future__ import annotations

import time
from typing import Annotated

from pydantic import Field

from worker.tools import tool


@tool
def add(a: Annotated[int, Field(description="first term")], b: int) -> int:
    """Add two integers."""
    return a + b


@tool
def lookup(city: str) -> str:
    """The weather in a city (always sunny here)."""
    return f"sunny in {city}"


@tool
def boom() -> str:
    """Always fails."""
    raise RuntimeError("the tool broke")


@tool
def slow(seconds: float) -> str:
    """Take a while."""
    time.sleep(seconds)
    return f"slept {seconds}"
