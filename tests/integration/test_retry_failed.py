"""`askq batch FILE --name N --retry-failed`: the failed jobs of a named batch run again."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from tests.conftest import Askq, wait_until
from worker.states import JobStatus


def statuses(deployment: Askq, batch_id: str) -> dict[str, JobStatus]:
    return {r.custom_id or "": r.status for r in deployment.client.results(batch_id)}


def settled(deployment: Askq, batch_id: str) -> dict[str, JobStatus]:
    return wait_until(  # type: ignore[no-any-return]
        lambda: (
            (found := statuses(deployment, batch_id))
            and all(s.terminal for s in found.values())
            and found
        ),
        what="every job to end",
    )


def test_retry_failed_reruns_only_the_failed_jobs(
    make_askq: Callable[..., Askq], tmp_path: Path
) -> None:
    deployment = make_askq(max_api_retries=0)
    deployment.start_worker()
    lines = [{"question": f"What is {i} + 1?", "custom_id": f"q{i}"} for i in range(4)]
    early, late = tmp_path / "early.jsonl", tmp_path / "all.jsonl"
    early.write_text("".join(json.dumps(line) + "\n" for line in lines[:2]))
    late.write_text("".join(json.dumps(line) + "\n" for line in lines))

    first = deployment.cli("batch", str(early), "--name", "nightly")
    batch_id = first.stdout.strip()
    assert set(settled(deployment, batch_id).values()) == {JobStatus.COMPLETED}

    # the API refuses every new run: the two new items fail for good
    deployment.emulator.configure(fail_500=1.0, fault_paths=[deployment.routes.create])
    deployment.cli("batch", str(late), "--name", "nightly")
    after = settled(deployment, batch_id)
    assert [after[f"q{i}"] for i in range(4)] == [JobStatus.COMPLETED] * 2 + [JobStatus.FAILED] * 2

    plain = deployment.cli("batch", str(late), "--name", "nightly")  # without the flag: skipped
    assert "4 already in batch 'nightly' skipped" in plain.stderr

    deployment.emulator.configure(fail_500=0.0, fault_paths=[])
    retried = deployment.cli("batch", str(late), "--name", "nightly", "--retry-failed")
    assert retried.returncode == 0, retried.stderr
    assert retried.stdout.strip() == batch_id
    assert "2 failed jobs retried, 2 already in batch 'nightly' skipped" in retried.stderr
    final = settled(deployment, batch_id)
    assert set(final.values()) == {JobStatus.COMPLETED}
    results = list(deployment.client.results(batch_id))
    assert [r.custom_id for r in results] == ["q0", "q1", "q2", "q3"]  # input order kept
    assert all(r.error is None and r.answer for r in results)
    counts = deployment.client.status(batch_id).counts  # type: ignore[union-attr]
    assert counts == {JobStatus.COMPLETED: 4}
    runs = deployment.emulator.stats()["runs_by_job"]
    assert [runs.get(r.job_id, 0) for r in results[:2]] == [1, 1]  # completed: never re-run


def test_retry_failed_needs_a_name(askq: Askq, tmp_path: Path) -> None:
    source = tmp_path / "q.txt"
    source.write_text("hello\n")
    done = askq.cli("batch", str(source), "--retry-failed")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "askq: error: --retry-failed needs --name: it retries the failed jobs of that named batch"
    ]
