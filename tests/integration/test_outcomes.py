"""Jobs that end not completed: their partial text, their usage, and one log line each."""

from __future__ import annotations

import csv
import io
import json

from tests.conftest import Askq, wait_until
from worker.models import JobResult
from worker.states import JobStatus


def test_incomplete_job_keeps_its_partial_text_in_results_and_csv(askq: Askq) -> None:
    batch_id = askq.client.submit_batch(
        [{"question": "[incomplete] tell a long story", "custom_id": "long"}]
    )
    (result,) = wait_until(
        lambda: [r for r in askq.client.results(batch_id) if r.status.terminal],
        what="the job to end",
    )
    assert result.status is JobStatus.INCOMPLETE
    assert result.answer is None
    assert result.partial_answer and "tell a long story" in result.partial_answer
    assert result.usage is not None and result.usage.completion_tokens > 0

    jsonl = askq.cli("results", batch_id)
    assert jsonl.returncode == 0, jsonl.stderr
    record = json.loads(jsonl.stdout)
    assert record["answer"] is None and record["partial_answer"] == result.partial_answer

    table = askq.cli("results", batch_id, "--format", "csv")
    (row,) = csv.DictReader(io.StringIO(table.stdout))
    assert row["answer"] == "" and row["partial_answer"] == result.partial_answer


def test_every_job_ending_not_completed_is_logged_once_with_its_code(askq: Askq) -> None:
    cases = {"[fail] a": "failed: server_error", "[incomplete] b": "incomplete: incomplete"}
    ids = {askq.client.ask(question): line for question, line in cases.items()}
    cancelled = askq.client.ask("[never] c")
    wait_until(lambda: askq.client.status(cancelled).status is JobStatus.RUNNING, what="running")
    askq.client.cancel(cancelled)
    ids[cancelled] = "cancelled: -"
    fine = askq.client.ask("What is 2 + 2?")
    for job_id in [*ids, fine]:
        result = askq.client.wait(job_id, timeout=30)
        assert isinstance(result, JobResult)
        assert result.usage is not None  # every terminal status carries a usage
    log = wait_until(
        lambda: (text := askq.workers[0].output()) and all(j in text for j in ids) and text,
        what="the log lines",
    )
    for job_id, line in ids.items():
        assert log.count(f"job {job_id} ended ") == 1, log[-3000:]
        assert f"job {job_id} ended {line}" in log
    assert f"job {fine} ended" not in log
