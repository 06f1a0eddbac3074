"""Workloads: a list of run durations, turned into questions the emulator understands.

The scripted emulator reads `[run_time=S]` from a question and makes that run take S
seconds, so one emulator serves fixed and mixed workloads alike.
"""

from __future__ import annotations

import math
import random
import re

RUN_TIME_TAG = re.compile(r"\[run_time=([0-9.]+)\]")


def durations(spec: str, n: int, seed: int = 7) -> list[float]:
    """`spec`: a number of seconds ("5", "0.5") or "mixed" (log-uniform over 1-30 s)."""
    if spec == "mixed":
        rng = random.Random(seed)
        return [round(math.exp(rng.uniform(math.log(1.0), math.log(30.0))), 3) for _ in range(n)]
    return [float(spec)] * n


def question(i: int, run_time: float) -> str:
    return f"Benchmark question {i}, please answer. [run_time={run_time}]"


def run_time_of(text: str) -> float:
    m = RUN_TIME_TAG.search(text)
    if m is None:
        raise ValueError(f"no run_time tag in {text!r}")
    return float(m.group(1))
