"""Submitting the same named batch again does not run its items again."""

from __future__ import annotations

import json

from tests.conftest import ASSISTANTS_ONLY, Askq


@ASSISTANTS_ONLY
def test_same_file_same_name_runs_nothing_twice(askq: Askq) -> None:
    path = askq.tmp / "nightly.jsonl"
    lines = [json.dumps({"question": f"What is {i} + 1?", "custom_id": f"n{i}"}) for i in range(5)]
    path.write_text("\n".join(lines) + "\n")
    first = askq.cli("batch", str(path), "--name", "nightly", "--wait", "--timeout", "60")
    assert first.returncode == 0, first.stderr
    batch_id = first.stdout.split()[-1]

    lines.append(json.dumps({"question": "What is 9 + 9?", "custom_id": "n9"}))
    path.write_text("\n".join(lines) + "\n")
    second = askq.cli("batch", str(path), "--name", "nightly", "--wait", "--timeout", "60")
    assert second.returncode == 0, second.stderr
    assert second.stdout.split()[-1] == batch_id
    assert "submitted 1 job, 5 already in batch 'nightly' skipped" in second.stderr

    records = [json.loads(line) for line in askq.cli("results", batch_id).stdout.splitlines()]
    assert [r["custom_id"] for r in records] == [f"n{i}" for i in range(5)] + ["n9"]
    assert all(r["status"] == "completed" for r in records)
    runs = askq.emulator.stats()["runs_by_job"]
    assert len(runs) == 6 and set(runs.values()) == {1}
