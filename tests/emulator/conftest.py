"""Fixtures: one emulator per session (in a thread), reset and reconfigured before each test."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from emu_helpers import BETA
from openai import OpenAI

from emulator import EmulatorConfig, EmulatorControl, RunningEmulator, serve_in_thread

# Fast defaults so the suite runs in seconds; tests that need other values configure them.
DEFAULTS: dict[str, Any] = EmulatorConfig(run_time_s=0.1, cancel_time_s=0.05).model_dump()


@pytest.fixture(scope="session")
def emulator() -> Iterator[RunningEmulator]:
    with serve_in_thread(EmulatorConfig(**DEFAULTS)) as running:
        yield running


@pytest.fixture
def control(emulator: RunningEmulator) -> Iterator[EmulatorControl]:
    with EmulatorControl(emulator.base) as ctl:
        ctl.configure(**DEFAULTS)
        ctl.reset()
        yield ctl


@pytest.fixture
def api(emulator: RunningEmulator, control: EmulatorControl) -> Iterator[httpx.Client]:
    """Raw HTTP with the beta header, for what the SDK would not let us send."""
    with httpx.Client(base_url=emulator.url, headers=BETA, timeout=10) as client:
        yield client


@pytest.fixture
def sdk(emulator: RunningEmulator, control: EmulatorControl) -> Iterator[OpenAI]:
    client = OpenAI(base_url=emulator.url, api_key="sk-emulator", max_retries=0)
    yield client
    client.close()
