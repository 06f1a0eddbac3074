"""A batch that fails part-way is reported honestly: its id on stdout, the exact number of
jobs accepted, and a command that adds the rest without repeating any (`--into`)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from producer.local_redis import LocalRedis
from tests.conftest import BOTH_CLIENTS, ROOT, make_client
from worker.errors import PartialSubmit
from worker.redis_store import connect
from worker.settings import load_settings
from worker.store import JobStore

LINES = 1200  # three chunks of 500


@pytest.fixture
def private_redis() -> Iterator[LocalRedis]:
    with LocalRedis() as server:
        yield server


def askq(url: str, *args: str, high_water: float = 90.0) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(ROOT),
        "ASKQ_REDIS_URL": url,
        "ASKQ_ASSISTANT_ID": "asst_test",
        "ASKQ_REDIS_HIGH_WATER_PCT": repr(high_water),
    }
    return subprocess.run(
        [sys.executable, "-m", "producer", *args], env=env, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip


def high_water_after_one_chunk(server: LocalRedis, questions: Path) -> float:
    """Measure what one chunk of 500 jobs takes, then set maxmemory so that a high-water mark
    half a chunk above what Redis holds now (returned) lets the first chunk in and refuses
    the second."""
    client = redis.Redis.from_url(server.url)
    before = int(client.info("memory")["used_memory"])
    probe_url = server.url_for(1)
    probe = askq(probe_url, "batch", str(questions))
    assert probe.returncode == 0, probe.stderr
    chunk = (int(client.info("memory")["used_memory"]) - before) * 500 // LINES
    redis.Redis.from_url(probe_url).flushdb()
    base = int(client.info("memory")["used_memory"])
    client.config_set("maxmemory", str(base * 4))
    return 100 * (base + chunk // 2) / (base * 4)


def test_a_batch_cut_short_names_its_batch_and_how_to_finish_it(
    private_redis: LocalRedis, tmp_path: Path
) -> None:
    client = redis.Redis.from_url(private_redis.url)
    questions = tmp_path / "questions.txt"
    questions.write_text("".join(f"Question number {i}?\n" for i in range(LINES)))
    high_water = high_water_after_one_chunk(private_redis, questions)

    cut = askq(private_redis.url, "batch", str(questions), high_water=high_water)
    assert cut.returncode == 2, cut.stderr
    batch_id = cut.stdout.strip().splitlines()[-1]  # the id, alone, on stdout
    assert batch_id.startswith("batch_")
    (line,) = cut.stderr.strip().splitlines()
    assert f"500 of {LINES} jobs are in batch {batch_id}" in line, line
    command = f"askq batch {questions} --into {batch_id}"
    assert command in line
    store = JobStore(connect(load_settings(redis_url=private_redis.url)), load_settings(
        redis_url=private_redis.url))  # fmt: skip
    assert client.llen(store.keys.batch_jobs(batch_id)) == 500

    client.config_set("maxmemory", "0")
    finished = askq(private_redis.url, *command.split()[1:])
    assert finished.returncode == 0, finished.stderr
    assert finished.stdout.strip() == batch_id
    assert f"submitted {LINES - 500} jobs, 500 already in batch {batch_id} skipped" in (
        finished.stderr
    )
    jobs = [j.decode() for j in client.lrange(store.keys.batch_jobs(batch_id), 0, -1)]
    assert len(jobs) == LINES == len(set(jobs))


@BOTH_CLIENTS
def test_the_python_api_reports_a_cut_batch_and_finishes_it_into_the_same_batch(
    private_redis: LocalRedis, tmp_path: Path, client_kind: str
) -> None:
    questions = tmp_path / "questions.txt"
    lines = [f"Question number {i}?" for i in range(LINES)]
    questions.write_text("".join(f"{line}\n" for line in lines))
    high_water = high_water_after_one_chunk(private_redis, questions)
    settings = load_settings(
        redis_url=private_redis.url, assistant_id="asst_test", redis_high_water_pct=high_water
    )
    client = make_client(settings, client_kind)
    try:
        with pytest.raises(PartialSubmit) as cut:
            client.submit(lines)
        assert cut.value.accepted == 500 and cut.value.exact
        redis.Redis.from_url(private_redis.url).config_set("maxmemory", "0")
        finished = client.submit(lines, into=cut.value.batch_id)
        assert (finished.batch_id, finished.accepted, finished.skipped) == (
            cut.value.batch_id,
            LINES - 500,
            500,
        )
        assert len({r.job_id for r in client.results(finished.batch_id)}) == LINES
    finally:
        client.close()


def test_a_full_redis_refuses_submission_with_one_line(
    private_redis: LocalRedis, tmp_path: Path
) -> None:
    client = redis.Redis.from_url(private_redis.url)
    client.config_set("maxmemory", str(int(client.info("memory")["used_memory"]) + 10_000))
    refused = askq(private_redis.url, "ask", "What is 1 + 1?")
    assert refused.returncode == 2
    (line,) = refused.stderr.strip().splitlines()
    assert "full" in line and "ASKQ_REDIS_HIGH_WATER_PCT=90" in line, line
    assert refused.stdout == ""
