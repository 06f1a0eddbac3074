"""py-spy sampling of a worker process, summarised by frame (self and inclusive time)."""

from __future__ import annotations

import subprocess
from collections import Counter
from pathlib import Path
from typing import Any


def record(pid: int, duration: int, out: Path, rate: int = 200, gil: bool = False) -> int:
    """Sample every thread of `pid` for `duration` s into collapsed stacks; idle frames
    (threads waiting on a socket or a lock) are left out by py-spy's default."""
    return subprocess.run(
        ["py-spy", "record", "--pid", str(pid), "--duration", str(duration), "--rate",
         str(rate), "--format", "raw", "--output", str(out), "--nonblocking",
         *(["--gil"] if gil else [])],
        capture_output=True, timeout=duration + 60,
    ).returncode  # fmt: skip


def _short(frame: str) -> str:
    # "func (path/to/module.py:123)" -> "func (module.py)"
    name, _, where = frame.partition(" (")
    file = where.rsplit("/", 1)[-1].split(":")[0]
    return f"{name} ({file}"


def summarize(path: Path, top: int = 40) -> dict[str, Any]:
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    if not path.exists():
        return {"samples": 0, "self": [], "inclusive": []}
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        frames = [_short(f) for f in stack.split(";")]
        total += n
        self_time[frames[-1]] += n
        for f in set(frames):
            inclusive[f] += n
    return {
        "samples": total,
        "self": [{"frame": f, "share": n / total} for f, n in self_time.most_common(top)],
        "inclusive": [{"frame": f, "share": n / total} for f, n in inclusive.most_common(top)],
    }
