"""The core pipeline end to end: real Redis, a real worker process, the emulator over HTTP."""

from __future__ import annotations

import json
import re

from tests.conftest import BOTH_CLIENTS, Askq
from worker.keys import Keys
from worker.states import JobStatus


@BOTH_CLIENTS
def test_batch_of_200_all_answered_once_each_in_order(askq: Askq) -> None:
    questions = [{"question": f"What is {i} * 7?", "custom_id": f"q{i}"} for i in range(200)]
    batch_id = askq.client.submit_batch(questions)
    final = askq.client.wait(batch_id, timeout=120)
    assert final.completed == 200  # type: ignore[union-attr]

    results = list(askq.client.results(batch_id))
    assert [r.custom_id for r in results] == [f"q{i}" for i in range(200)]
    for i, result in enumerate(results):
        assert result.status is JobStatus.COMPLETED
        assert result.answer is not None and str(i * 7) in result.answer, result.answer
        assert result.usage is not None and result.usage.total_tokens > 0
        assert result.run_id and result.thread_id

    stats = askq.emulator.stats()
    runs = stats["runs_by_job"]
    assert sorted(runs) == sorted(r.job_id for r in results)
    assert set(runs.values()) == {1}
    requests = sum(stats["requests"].values())
    print(f"\nAPI requests per job (200 jobs): {requests / 200:.2f}: {stats['requests']}")
    assert stats["requests"][askq.routes.thread] == 200
    assert stats["requests"][askq.routes.create] == 200


def test_poll_after_hint_is_honoured(make_askq: object) -> None:
    deployment = make_askq(poll_min_s=0.05, poll_max_s=0.05)  # type: ignore[operator]
    deployment.emulator.configure(run_time_s=2.0, poll_after_ms=500)
    deployment.start_worker()
    batch_id = deployment.client.submit_batch([f"What is {i} + 1?" for i in range(5)])
    deployment.client.wait(batch_id, timeout=60)
    gets = deployment.emulator.stats()["gets_by_run"]
    assert len(gets) == 5
    # 2 s runs polled no sooner than every 0.5 s: at most 2 / 0.5 + 1 looks each. Without
    # the hint the 0.05 s back-off bounds would give about 40.
    assert all(2 <= n <= 5 for n in gets.values()), gets


def test_backoff_stays_within_bounds_without_hint(make_askq: object) -> None:
    fast = make_askq(poll_min_s=0.1, poll_max_s=0.1)  # type: ignore[operator]
    fast.emulator.configure(run_time_s=1.5)
    fast.start_worker()
    batch_id = fast.client.submit_batch([f"What is {i} + 2?" for i in range(4)])
    fast.client.wait(batch_id, timeout=60)
    gets_fast = fast.emulator.stats()["gets_by_run"]
    # polls every ~0.1 s (±10 % jitter) over 1.5 s
    assert all(9 <= n <= 20 for n in gets_fast.values()), gets_fast


def test_backoff_grows_to_the_maximum(make_askq: object) -> None:
    slow = make_askq(poll_min_s=0.1, poll_max_s=0.4)  # type: ignore[operator]
    slow.emulator.configure(run_time_s=3.0)
    slow.start_worker()
    batch_id = slow.client.submit_batch([f"What is {i} + 3?" for i in range(4)])
    slow.client.wait(batch_id, timeout=60)
    gets = slow.emulator.stats()["gets_by_run"]
    # 0.1, 0.15, 0.225, 0.34, then 0.4 s: about 10 looks over 3 s, never 30 (min) nor 7 (max)
    assert all(7 <= n <= 14 for n in gets.values()), gets


@BOTH_CLIENTS
def test_each_terminal_status_is_stored_and_polling_stops(askq: Askq) -> None:
    cases = {
        "[fail] please": (JobStatus.FAILED, "server_error"),
        "[incomplete] please": (JobStatus.INCOMPLETE, "incomplete"),
    }
    if askq.settings.api_style == "assistants":  # Responses have no `expired` status
        cases["[expire] please"] = (JobStatus.EXPIRED, "expired")
    ids = {askq.client.ask(q): expected for q, expected in cases.items()}
    keys = Keys(askq.settings.key_prefix)
    for job_id, (status, code) in ids.items():
        result = askq.client.wait(job_id, timeout=30)
        assert result.status is status  # type: ignore[union-attr]
        assert result.error is not None and result.error.code == code  # type: ignore[union-attr]
        assert result.answer is None  # type: ignore[union-attr]
        # nothing left to drive it: no due entry, no next task, no deadline
        r = askq.client.store.redis
        assert r.zscore(keys.due, job_id) is None
        assert r.zscore(keys.deadlines, job_id) is None
        assert r.hget(keys.job(job_id), "next") is None
    counts = askq.client.store.counts()
    assert counts.get(JobStatus.RUNNING, 0) == 0


@BOTH_CLIENTS
def test_job_on_existing_thread_reads_its_own_run(askq: Askq) -> None:
    first = askq.client.wait(askq.client.ask("What is 1 + 1?"), timeout=30)
    assert first.answer is not None and "2" in first.answer  # type: ignore[union-attr]
    thread = first.thread_id  # type: ignore[union-attr]
    second = askq.client.wait(askq.client.ask("What is 20 + 22?", thread_id=thread), timeout=30)
    assert second.status is JobStatus.COMPLETED  # type: ignore[union-attr]
    assert second.thread_id == thread  # type: ignore[union-attr]
    assert second.answer == "20 + 22 = 42"  # type: ignore[union-attr]
    assert second.run_id != first.run_id  # type: ignore[union-attr]


def test_cli_batch_with_bad_lines(askq: Askq) -> None:
    lines = [
        json.dumps({"question": "What is 6 * 7?", "custom_id": "a"}),
        "{not json",
        json.dumps({"question": "What is 2 + 2?", "custom_id": "b"}),
        json.dumps({"custom_id": "no-question"}),
        json.dumps({"question": "What is 10 - 3?", "custom_id": "c"}),
    ]
    path = askq.tmp / "input.jsonl"
    path.write_text("\n".join(lines) + "\n")
    done = askq.cli("batch", str(path), "--wait", "--timeout", "60")
    assert done.returncode == 0, done.stderr
    batch_id = done.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"batch_[0-9a-f]{32}", batch_id)
    assert re.search(r"line 2: not valid JSON", done.stderr)
    assert "line 4:" in done.stderr
    assert "line 1:" not in done.stderr and "line 3:" not in done.stderr
    out = askq.cli("results", batch_id)
    records = [json.loads(line) for line in out.stdout.splitlines()]
    assert [(r["custom_id"], r["answer"]) for r in records] == [
        ("a", "6 * 7 = 42"),
        ("b", "2 + 2 = 4"),
        ("c", "10 - 3 = 7"),
    ]


def test_cli_unknown_ids_exit_2_with_one_line(askq: Askq) -> None:
    for args in (
        ("status", "job_doesnotexist"),
        ("results", "batch_doesnotexist"),
        ("wait", "job_nope"),
        ("cancel", "batch_nope"),
    ):
        done = askq.cli(*args)
        assert done.returncode == 2, (args, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("askq: error: no "), done.stderr


def test_cli_ask_wait_prints_answer_and_status_json(askq: Askq) -> None:
    done = askq.cli("ask", "What is 17 * 23?", "--wait", "--timeout", "30")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "17 * 23 = 391"
    job = askq.cli("ask", "[fail] now")
    job_id = job.stdout.strip().splitlines()[-1]
    waited = askq.cli("wait", job_id, "--timeout", "30")
    assert waited.returncode == 1
    status = json.loads(askq.cli("status", job_id, "--json").stdout)
    assert status["status"] == "failed" and status["error"]["code"] == "server_error"
