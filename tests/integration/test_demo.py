"""`askq demo`, the README's first command, end to end in a subprocess."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from producer.local_redis import free_port


def run_demo(redis_url: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASKQ_")}
    env["ASKQ_REDIS_URL"] = redis_url
    return subprocess.run(
        [sys.executable, "-m", "producer", "demo"],
        env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip


@pytest.mark.parametrize("redis", ["reachable", "none"])
def test_demo_answers_the_sample_batch(redis: str, redis_url: str) -> None:
    url = redis_url if redis == "reachable" else f"redis://127.0.0.1:{free_port()}/0"
    done = run_demo(url)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "20/20 completed" in done.stderr
    assert "17 * 23 = 391" in done.stdout  # the answers table
    assert ("started a private one" in done.stderr) == (redis == "none")
    named = re.search(r"log (\S+askq-demo-worker-\w+\.log)\)", done.stderr)
    assert named, done.stderr  # a file of this run's own, so two demos never share one
    assert Path(named.group(1)).is_file()
    Path(named.group(1)).unlink()
