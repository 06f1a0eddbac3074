"""A chat bridge restarted mid-batch: with its state in Redis, every job still completes."""

from __future__ import annotations

from collections.abc import Callable

from emulator import EmulatorConfig, RunningEmulator, serve_in_subprocess
from producer.local_redis import free_port
from tests.conftest import BRIDGED_STYLES, Askq, wait_until
from worker.states import JobStatus

JOBS = 8
pytestmark = BRIDGED_STYLES


def test_bridge_restart_mid_batch_loses_no_job(
    make_askq: Callable[..., Askq], emulator_server: RunningEmulator, redis_url: str
) -> None:
    # the scripted emulator's /chat/completions is the "model": [run_time=S] makes it slow
    config = EmulatorConfig(
        engine="chat",
        upstream_url=emulator_server.url,
        upstream_model="scripted",
        state_redis_url=redis_url,
    )
    port = free_port()
    bridge = serve_in_subprocess(config, port=port)
    try:
        deployment = make_askq(api_base=bridge.url)
        deployment.start_worker()
        client = deployment.client
        batch_id = client.submit_batch([f"[run_time=3] question {i}" for i in range(JOBS)])
        wait_until(
            lambda: client.status(batch_id).counts.get(JobStatus.RUNNING, 0) == JOBS,  # type: ignore[union-attr]
            what="every job to be running on the bridge",
        )
        bridge.stop()  # every upstream call is cut; askq's next polls find nobody
        bridge = serve_in_subprocess(config, port=port)
        results = wait_until(
            lambda: (
                (rs := list(client.results(batch_id))) and all(r.status.terminal for r in rs) and rs
            ),
            timeout=60,
            what="every job to end",
        )
        assert [r.status for r in results] == [JobStatus.COMPLETED] * JOBS, [
            (r.status, r.error) for r in results
        ]
        for i, result in enumerate(results):
            assert result.answer is not None and f"question {i}" in result.answer
    finally:
        bridge.stop()
