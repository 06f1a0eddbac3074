"""Learning run durations for predictive polling, without Redis."""

from __future__ import annotations

import random

from worker.durations import Durations


def simulate(draw: random.Random, durations: list[float], rounds: int = 3000) -> Durations:
    """Poll as the worker would (first look at `first_look`, then every 0.5 s) and learn."""
    learned = Durations.seed(0.0, durations[0])
    for _ in range(rounds):
        d = draw.choice(durations)
        look = learned.first_look()
        running_at = 0.0
        while look < d:
            running_at, look = look, look + 0.5
        learned = learned.learn(running_at, look)
    return learned


def test_consistent_runs_are_answered_by_one_look() -> None:
    draw = random.Random(1)
    learned = simulate(draw, [5.0])
    assert learned.first_look() == learned.high  # consistent: look once, at the end
    assert 5.0 - 1e-6 <= learned.high <= 5.2


def test_mixed_runs_look_first_at_the_short_end() -> None:
    draw = random.Random(2)
    mixed = [10 ** draw.uniform(0, 1.477) for _ in range(500)]  # 1-30 s, log-uniform
    learned = simulate(draw, mixed)
    ordered = sorted(mixed)
    p10, p90 = ordered[50], ordered[450]
    assert 0.5 * p10 <= learned.low <= 2 * p10
    assert 0.6 * p90 <= learned.high <= 1.5 * p90
    assert learned.first_look() == learned.low  # dispersed: do not keep short runs waiting


def test_a_seen_running_run_pushes_estimates_later() -> None:
    learned = Durations(2.0, 2.5)
    later = learned.learn(running_at=2.6, done_at=3.1)
    assert later.low > learned.low and later.high > learned.high
    earlier = learned.learn(running_at=0.0, done_at=1.0)
    assert earlier.low < learned.low and earlier.high < learned.high


def test_round_trip_through_redis_text() -> None:
    learned = Durations(1.25, 7.5)
    assert Durations.parse(learned.dump()) == learned
