"""The pump's packing of due jobs into task messages: one job a message under light load,
several (up to the bound) under load, never two tasks in one message."""

from __future__ import annotations

from worker.dispatch import Claim
from worker.pump import SPREAD, pack


def claims(task: str, n: int) -> list[Claim]:
    return [Claim(f"job_{task}_{i}", task) for i in range(n)]


def test_light_load_sends_one_job_a_message() -> None:
    messages = pack(claims("askq.poll", SPREAD) + claims("askq.start", 3), most=16)
    assert [len(m) for m in messages] == [1] * (SPREAD + 3)


def test_load_packs_jobs_of_one_task_up_to_the_bound() -> None:
    due = claims("askq.poll", 200) + claims("askq.start", 20)
    messages = pack(due, most=10)
    for message in messages:
        assert len({c.task for c in message}) == 1
        assert len(message) <= 10
    polls = [m for m in messages if m[0].task == "askq.poll"]
    assert len(polls) == 20  # 200 jobs, 10 a message
    assert sorted(c.job_id for m in messages for c in m) == sorted(c.job_id for c in due)
    starts = [m for m in messages if m[0].task == "askq.start"]
    assert len(starts) >= SPREAD  # a few jobs of a task still go to several workers


def test_a_bound_of_one_turns_packing_off() -> None:
    assert all(len(m) == 1 for m in pack(claims("askq.poll", 200), most=1))
