"""Predictive polling: what askq learns about how long runs of one assistant or model take.

Two quantiles of the run duration are tracked by stochastic approximation (each finished
run nudges each estimate up or down, in the proportion that settles on its quantile), from
what polling observes: the run was still going at the previous look and done at this one.

When runs take about the same time (the 90th percentile within 1.5x of the 10th), the first
look goes at the 90th percentile: most runs are answered by that single poll. When they vary
(a mixed workload), it goes at the 10th: the polls before even the shortest runs could end
are saved, and the usual back-off takes over from there, so short runs pay no latency.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

LOW_QUANTILE = 0.1
HIGH_QUANTILE = 0.9
STEP = 0.2
CONSISTENT_RATIO = 1.5
LOOK_JITTER = 0.05
"""A look aimed at a learned time lands up to this much later (PollPolicy's upward jitter)."""
DISPATCH_S = 0.2
"""...plus the pump and queue delay of one task message."""


def _track(estimate: float, quantile: float, running_at: float, done_at: float) -> float:
    if estimate * (1 + LOOK_JITTER) + DISPATCH_S >= done_at:
        below = 1.0  # the look aimed at the estimate (it lands a little later) found it done
    elif estimate <= running_at:
        below = 0.0  # still going then
    else:
        return estimate  # it ended between two looks that bracket the estimate: no news
    return estimate * math.exp(STEP * (quantile - below))


@dataclass(frozen=True)
class Durations:
    low: float
    high: float

    @classmethod
    def seed(cls, running_at: float, done_at: float) -> Durations:
        """The first finished run: it ended somewhere between the two looks."""
        middle = (running_at + done_at) / 2 if running_at > 0 else done_at
        return cls(middle, middle)

    @classmethod
    def parse(cls, raw: str) -> Durations:
        low, high = raw.split(",")
        return cls(float(low), float(high))

    def dump(self) -> str:
        return f"{self.low!r},{self.high!r}"

    def first_look(self) -> float:
        """Seconds after the run's creation to look at it first."""
        if self.high <= CONSISTENT_RATIO * self.low:
            return self.high
        return self.low

    def learn(self, running_at: float, done_at: float) -> Durations:
        """A run was seen running `running_at` s after its creation (0 if never) and done
        at `done_at`."""
        return Durations(
            _track(self.low, LOW_QUANTILE, running_at, done_at),
            _track(self.high, HIGH_QUANTILE, running_at, done_at),
        )
