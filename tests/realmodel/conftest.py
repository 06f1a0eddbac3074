"""The real-model suite: askq through the chat bridge to llama-server running SmolLM2-135M.

Every test here is marked `realmodel`, which the default run deselects (pyproject addopts);
`scripts/real-model` builds llama-server once per machine and runs them with -m realmodel.
A build that fails fails the session with its one-line reason.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from emulator import EmulatorConfig, RunningEmulator, real_model, serve_in_subprocess
from producer.local_redis import free_port
from tests.conftest import Askq

SLOTS = 4
"""llama-server's parallel slots: the cancel test fills them all and queues more."""
BRIDGE_MAX_TOKENS = 256
FIGURES: dict[str, float] = {}
"""What llama-server measured, shown at the end of the run (tokens/s)."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.realmodel)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if FIGURES:
        shown = ", ".join(f"{name} {value:.1f}" for name, value in sorted(FIGURES.items()))
        terminalreporter.write_line(f"real-model: llama-server figures: {shown}")


def llama_metrics(server: real_model.LlamaServer) -> dict[str, float]:
    """llama-server's Prometheus counters and gauges, without the `llamacpp:` prefix."""
    text = httpx.get(f"{server.root}/metrics", timeout=5).text
    return {
        match[1]: float(match[2])
        for match in re.finditer(r"^llamacpp:(\w+) ([0-9.eE+-]+)$", text, re.MULTILINE)
    }


def busy_slots(server: real_model.LlamaServer) -> int:
    slots = httpx.get(f"{server.root}/slots", timeout=5).json()
    return sum(1 for slot in slots if slot.get("is_processing"))


@pytest.fixture(scope="session")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Iterator[real_model.LlamaServer]:
    try:
        real_model.ensure_cached()
        server = real_model.start_server(
            free_port(), tmp_path_factory.mktemp("llama") / "llama-server.log", slots=SLOTS
        )
    except real_model.RealModelUnavailable as exc:
        pytest.fail(f"real model unavailable: {exc}", pytrace=False)
    try:
        yield server
        metrics = llama_metrics(server)
        for name in ("predicted_tokens_seconds", "prompt_tokens_seconds", "tokens_predicted_total"):
            if name in metrics:
                FIGURES[name] = metrics[name]
    finally:
        server.stop()


class Bridge:
    """`askq emulator --engine chat` in front of llama-server, in a child process that can
    be restarted on the same port; its state lives in the test's Redis."""

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.port = free_port()
        self.running: RunningEmulator = serve_in_subprocess(config, port=self.port)
        self.url = self.running.url

    def restart(self) -> None:
        self.running.stop()
        self.running = serve_in_subprocess(self.config, port=self.port)

    def stop(self) -> None:
        self.running.stop()


@pytest.fixture
def bridge(llama: real_model.LlamaServer, redis_url: str) -> Iterator[Bridge]:
    config = EmulatorConfig(
        engine="chat",
        upstream_url=llama.url,
        upstream_model=real_model.MODEL_ALIAS,
        upstream_max_tokens=BRIDGE_MAX_TOKENS,
        state_redis_url=redis_url,
    )
    running = Bridge(config)
    yield running
    running.stop()


@pytest.fixture
def deployment(make_askq: Callable[..., Askq], bridge: Bridge) -> Askq:
    made = make_askq(
        api_base=bridge.url,
        model=real_model.MODEL_ALIAS,
        tool_modules="examples.weather_tools",
        poll_min_s=0.2,
        poll_max_s=1.0,
    )
    made.start_worker()
    return made
