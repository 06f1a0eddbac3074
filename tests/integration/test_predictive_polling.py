"""Predictive polling: learned run durations put the first look near the end of the run."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.conftest import ASSISTANTS_ONLY, Askq


def gets_per_run(deployment: Askq, predict: bool) -> float:
    deployment.emulator.configure(run_time_s=3.0)
    deployment.start_worker()
    warm_up = deployment.client.submit_batch([f"What is {i} + 7?" for i in range(10)])
    deployment.client.wait(warm_up, timeout=60)
    deployment.emulator.reset()
    batch_id = deployment.client.submit_batch([f"What is {i} + 8?" for i in range(20)])
    assert deployment.client.wait(batch_id, timeout=60).completed == 20  # type: ignore[union-attr]
    gets = deployment.emulator.stats()["gets_by_run"]
    return sum(gets.values()) / len(gets)


@ASSISTANTS_ONLY
@pytest.mark.parametrize("predict", [True, False], ids=["learned", "back-off"])
def test_learned_durations_save_polls(make_askq: Callable[..., Askq], predict: bool) -> None:
    deployment = make_askq(poll_min_s=0.2, poll_max_s=1.0, poll_predict=predict)
    mean = gets_per_run(deployment, predict)
    print(f"\n3 s runs, {'learned' if predict else 'back-off only'}: {mean:.2f} GETs per run")
    if predict:
        assert mean <= 2.0  # mostly one look, right at the end
    else:
        assert mean >= 4.0  # 0.2 s growing to 1 s: about six looks


@ASSISTANTS_ONLY
def test_a_cold_batch_learns_as_it_goes(make_askq: Callable[..., Askq]) -> None:
    """Nothing learned yet, 32 runs at once: the scouts' first finished run re-targets the
    deferred first looks of the others, so most runs are answered by one or two looks (the
    back-off alone makes about six at these settings)."""
    deployment = make_askq(poll_min_s=0.1, poll_max_s=3.0)
    deployment.emulator.configure(run_time_s=1.5)
    deployment.start_worker()
    batch_id = deployment.client.submit_batch([f"What is {i} + 9?" for i in range(32)])
    assert deployment.client.wait(batch_id, timeout=90).completed == 32  # type: ignore[union-attr]
    gets = sorted(deployment.emulator.stats()["gets_by_run"].values())
    print(f"\ncold batch of 1.5 s runs: GETs per run {gets}")
    assert sum(gets[:24]) / 24 <= 2.0  # all but the scouts (8) and their like
