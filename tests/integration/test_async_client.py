"""`AsyncClient` inside one event loop, as an asyncio service uses it: following a batch
awaits (the loop runs the coroutine that ends the batch meanwhile), cancels reach the
workers, answers come back."""

from __future__ import annotations

import asyncio

from producer import AsyncClient, JobResult
from tests.conftest import ASSISTANTS_ONLY, Askq
from worker.states import JobStatus


@ASSISTANTS_ONLY
def test_a_follower_awaits_while_the_same_loop_cancels_the_batch(askq: Askq) -> None:
    """A follow that blocked the thread would never let the cancel run: the batch would
    never end and the test would hang to its timeout."""

    async def main() -> tuple[list[JobResult], int, list[str]]:
        async with AsyncClient(askq.settings) as client:
            batch_id = await client.submit_batch([f"[never] job {i}" for i in range(5)])

            async def follow() -> list[JobResult]:
                return [r async for r in client.iter_results(batch_id, follow=True)]

            following = asyncio.create_task(follow())
            while (await client.status(batch_id)).counts.get(  # type: ignore[union-attr]
                JobStatus.RUNNING, 0
            ) < 5:
                await asyncio.sleep(0.1)
            outcome = await client.cancel(batch_id)
            ended = await asyncio.wait_for(following, 120)
            job_ids = await asyncio.gather(*(client.ask(f"What is {i} * 3?") for i in range(10)))
            answers = await asyncio.gather(*(client.wait(job_id, 60) for job_id in job_ids))
            return ended, outcome.requested, [a.answer or "" for a in answers]  # type: ignore[union-attr]

    ended, requested, answers = asyncio.run(main())
    assert requested == 5
    assert len({r.job_id for r in ended}) == len(ended) == 5
    assert {r.status for r in ended} == {JobStatus.CANCELLED}
    assert set(askq.emulator.stats()["cancel_requests"].values()) == {1}
    assert answers == [f"{i} * 3 = {i * 3}" for i in range(10)]
