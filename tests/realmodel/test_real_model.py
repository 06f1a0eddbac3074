"""askq on a real self-hosted model, both protocols: real text, a tool round trip, the token
limit, a cancel that idles the server, a bridge restart that loses no job."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from emulator.client import EmulatorControl
from emulator.real_model import LlamaServer
from tests.conftest import BRIDGED_STYLES, ROOT, Askq, wait_until
from tests.realmodel.conftest import SLOTS, Bridge, busy_slots, llama_metrics
from worker.models import JobRequest, JobResult
from worker.states import JobStatus

pytestmark = BRIDGED_STYLES
LONG_TASK = "Write a very long story about a dragon who learns to bake bread."


def finished(deployment: Askq, job_id: str, timeout: float = 120) -> JobResult:
    result = deployment.client.wait(job_id, timeout=timeout)
    assert isinstance(result, JobResult)
    return result


def test_answers_are_the_models_own_text(deployment: Askq) -> None:
    # greedy decoding: the same short answer every time, well within the bridge's cap
    request = JobRequest(question="What is the capital of France?", temperature=0)
    result = finished(deployment, deployment.client.ask(request))
    assert result.status is JobStatus.COMPLETED, result.error
    assert result.answer and result.answer.strip()
    assert "askq emulator" not in result.answer  # not the scripted engine
    assert result.usage is not None and result.usage.completion_tokens > 0


def test_tool_round_trip(deployment: Askq) -> None:
    # the docs' example: one worked call in the messages, and the tool named
    line = (ROOT / "examples" / "weather.jsonl").read_text().splitlines()[0]
    request = JobRequest.model_validate(json.loads(line))
    assert request.tool_choice == "get_weather" and request.messages
    result = finished(deployment, deployment.client.ask(request))
    # after the tool the model writes its answer; a 135M model sometimes rambles past the
    # line's 96 tokens: then the round trip still happened, and the text is the partial answer
    assert result.status in (JobStatus.COMPLETED, JobStatus.INCOMPLETE), result.error
    (call,) = result.tool_calls[:1]
    assert call.name == "get_weather"
    assert "city" in json.loads(call.arguments)
    assert call.error is None and call.output
    # only the round after the tool writes text (the first one asked for the call)
    assert (result.answer or result.partial_answer or "").strip()


def test_token_limit_keeps_the_partial_text(deployment: Askq) -> None:
    request = JobRequest(question=LONG_TASK, max_tokens=8)
    result = finished(deployment, deployment.client.ask(request))
    assert result.status is JobStatus.INCOMPLETE
    assert result.answer is None and result.partial_answer and result.partial_answer.strip()
    assert result.usage is not None and 0 < result.usage.completion_tokens <= 8


def test_the_bridges_default_cap_stops_a_runaway_answer(deployment: Askq, bridge: Bridge) -> None:
    EmulatorControl(bridge.url).configure(upstream_max_tokens=12)  # applies to the next call
    result = finished(deployment, deployment.client.ask(LONG_TASK))
    assert result.status is JobStatus.INCOMPLETE
    assert result.usage is not None and 0 < result.usage.completion_tokens <= 12


def test_cancel_idles_the_server_queued_requests_included(
    deployment: Askq, llama: LlamaServer
) -> None:
    # more jobs than slots: the extra ones wait in llama-server's queue
    # no tools offered: a short prompt, so no long prompt batch delays the cancel; each job
    # would generate for minutes if nothing stopped it
    jobs = [
        JobRequest(question=f"{LONG_TASK} Part {i}.", max_tokens=1500, tools=[])
        for i in range(SLOTS + 2)
    ]
    batch_id = deployment.client.submit_batch(jobs)
    wait_until(lambda: busy_slots(llama) == SLOTS, timeout=60, what="every slot generating")
    wait_until(
        lambda: (
            llama_metrics(llama).get("requests_deferred", 0) >= 1
            or deployment.client.status(batch_id).counts.get(JobStatus.RUNNING, 0) == SLOTS + 2
        ),  # type: ignore[union-attr]
        what="the extra jobs to be queued",
    )
    cancelled_at = time.monotonic()
    deployment.client.cancel(batch_id)
    # /slots is live; the metrics' deferred gauge is only refreshed when a task is handled
    # a cancel takes effect between two of llama-server's decode batches: ~1 s here, longer
    # when other processes hold the cores (the bound only has to beat minutes of generation)
    wait_until(lambda: busy_slots(llama) == 0, timeout=60, what="llama-server to go idle")
    idle_after = time.monotonic() - cancelled_at
    # and it stays idle: no queued request starts once its run was cancelled
    watch_until = time.monotonic() + 3
    while time.monotonic() < watch_until:
        assert busy_slots(llama) == 0
        time.sleep(0.2)
    final = deployment.client.wait(batch_id, timeout=60)
    assert final.counts.get(JobStatus.CANCELLED) == SLOTS + 2  # type: ignore[union-attr]
    print(f"\nreal-model: slots idle {idle_after:.1f} s after askq cancel")


def test_bridge_restart_mid_batch_loses_no_job(deployment: Askq, bridge: Bridge) -> None:
    questions = [f"Name a fruit that starts with the letter {c}." for c in "ABCDEF"]
    batch_id = deployment.client.submit_batch(
        [JobRequest(question=q, max_tokens=64) for q in questions]
    )
    wait_until(
        lambda: deployment.client.status(batch_id).counts.get(JobStatus.RUNNING, 0) >= 2,  # type: ignore[union-attr]
        timeout=60,
        what="runs in flight",
    )
    bridge.restart()
    final = deployment.client.wait(batch_id, timeout=240)
    results = list(deployment.client.results(batch_id))
    assert final.completed + final.counts.get(JobStatus.INCOMPLETE, 0) == len(questions), [  # type: ignore[union-attr]
        (r.status, r.error) for r in results
    ]
    assert all((r.answer or r.partial_answer or "").strip() for r in results)


def test_demo_runs_on_the_cached_model(
    llama: LlamaServer, redis_url: str, tmp_path: Path, style: str
) -> None:
    """`askq demo --model`: the demo's whole stack, with the real model instead of the
    scripted emulator (its own llama-server; `llama` only makes sure the cache is built)."""
    if style != "assistants":
        pytest.skip("the demo speaks Assistants only")
    questions = tmp_path / "q.txt"
    questions.write_text("What is the capital of France?\nName a primary color.\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASKQ_")}
    env["ASKQ_REDIS_URL"] = redis_url
    done = subprocess.run(
        [sys.executable, "-m", "producer", "demo", "--model", "--questions", str(questions)],
        env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert "Model: llama-server" in done.stderr, done.stderr[-3000:]
    assert "askq emulator received" not in done.stdout  # real answers, not the scripted engine
    # the model's own words (sampled: which words varies), one row per question
    assert "2/2 completed" in done.stderr or done.returncode == 1, done.stderr[-3000:]
    assert done.stdout.count("completed") + done.stdout.count("incomplete") >= 2, done.stdout
