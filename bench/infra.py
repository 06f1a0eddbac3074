"""What every benchmark needs: a private Redis, the emulator in its own process, askq worker
processes, and a sampler of CPU / RSS / Redis memory.

Nothing here touches the machine's shared Redis: each `Stack` starts its own redis-server
(`producer.local_redis.LocalRedis`) and each measured run gets a fresh database in it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import redis

from emulator.client import EmulatorControl
from emulator.config import EmulatorConfig
from emulator.server import RunningEmulator, serve_in_subprocess
from producer.local_redis import LocalRedis

ROOT = Path(__file__).resolve().parent.parent
ASSISTANT = "asst_bench"
WORKER_START_TIMEOUT_S = 60.0


def tree_cpu(proc: psutil.Process) -> float:
    """User + system CPU seconds of a process and its live children."""
    total = 0.0
    for p in [proc, *_children(proc)]:
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            total += t.user + t.system
    return total


def tree_rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *_children(proc)]:
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total


def _children(proc: psutil.Process) -> list[psutil.Process]:
    try:
        return proc.children(recursive=True)
    except psutil.Error:
        return []


@dataclass
class Worker:
    process: subprocess.Popen[bytes]
    heartbeat: Path
    log: Path

    @property
    def ps(self) -> psutil.Process:
        return psutil.Process(self.process.pid)

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 30.0) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


@dataclass
class Stack:
    """A private Redis and one emulator process, for a whole bench session."""

    redis_server: LocalRedis
    emulator: RunningEmulator
    control: EmulatorControl
    tmp: Path
    next_db: int = 1
    workers: list[Worker] = field(default_factory=list)

    @classmethod
    def start(cls) -> Stack:
        server = LocalRedis(databases=64).start()
        emu = serve_in_subprocess(EmulatorConfig(run_time_s=0.5))
        tmp = Path(tempfile.mkdtemp(prefix="askq-bench-"))
        return cls(server, emu, EmulatorControl(emu.base, timeout=120), tmp)

    def close(self) -> None:
        for w in self.workers:
            w.stop()
        self.control.close()
        self.emulator.stop()
        self.redis_server.cleanup()

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- processes ----------------------------------------------------------------------

    @property
    def redis_pid(self) -> int:
        assert self.redis_server.process is not None
        return self.redis_server.process.pid

    @property
    def emulator_pid(self) -> int | None:
        # serve_in_subprocess keeps its Popen in a closure: find the child by command line
        me = psutil.Process()
        for child in me.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                if "emulator" in " ".join(child.cmdline()) and "-m" in child.cmdline():
                    return child.pid
        return None

    def fresh_db(self) -> str:
        """A flushed database of the private Redis for one measured run."""
        db = self.next_db
        self.next_db = 1 + (self.next_db % 63)
        url = self.redis_server.url_for(db)
        client = redis.Redis.from_url(url)
        client.flushdb()
        client.close()
        return url

    def reset_emulator(self, run_time_s: float, poll_after_ms: int | None) -> None:
        self.control.configure(run_time_s=run_time_s, poll_after_ms=poll_after_ms)
        self.control.reset()

    def worker_env(self, redis_url: str, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ASKQ_")}
        env.update(
            {
                "ASKQ_REDIS_URL": redis_url,
                "ASKQ_API_BASE": self.emulator.url,
                "ASKQ_ASSISTANT_ID": ASSISTANT,
                "ASKQ_POLL_MIN_S": "0.5",
                "ASKQ_POLL_MAX_S": "8",
                "ASKQ_MAX_INFLIGHT": "256",
                "PYTHONPATH": str(ROOT),
            }
        )
        env.update(extra)
        return env

    def start_workers(
        self,
        count: int,
        redis_url: str,
        concurrency: int,
        env: dict[str, str],
        app: str = "worker",
        pool: str = "threads",
    ) -> list[Worker]:
        started = []
        for _ in range(count):
            n = len(self.workers)
            heartbeat = self.tmp / f"worker{n}.alive"
            log = self.tmp / f"worker{n}.log"
            args = [
                sys.executable, "-m", "celery", "-A", app, "worker", "--loglevel=WARNING",
                f"--pool={pool}", f"--concurrency={concurrency}", f"--hostname=bench{n}@%h",
                "--without-mingle", "--without-gossip",
            ]  # fmt: skip
            wenv = self.worker_env(redis_url, ASKQ_HEARTBEAT_FILE=str(heartbeat), **env)
            with open(log, "wb") as out:
                proc = subprocess.Popen(
                    args, env=wenv, stdout=out, stderr=subprocess.STDOUT, cwd=self.tmp,
                    start_new_session=True,
                )  # fmt: skip
            worker = Worker(proc, heartbeat, log)
            self.workers.append(worker)
            started.append(worker)
        deadline = time.monotonic() + WORKER_START_TIMEOUT_S
        for worker in started:
            while not worker.heartbeat.exists():
                if not worker.alive():
                    raise RuntimeError(f"worker died at start:\n{worker.log.read_text()[-3000:]}")
                if time.monotonic() > deadline:
                    raise RuntimeError("worker did not start in time")
                time.sleep(0.05)
        return started

    def stop_workers(self, workers: list[Worker]) -> None:
        for w in workers:
            w.stop()
            self.workers.remove(w)


class Sampler:
    """Samples process-tree CPU and RSS, and Redis `used_memory`, on a background thread.

    `groups` maps a name (worker, redis, emulator, bench) to the pids whose trees it sums."""

    def __init__(
        self, groups: dict[str, list[int]], redis_url: str | None, interval: float = 0.25
    ) -> None:
        self.procs = {name: [psutil.Process(pid) for pid in pids] for name, pids in groups.items()}
        self.redis = redis.Redis.from_url(redis_url) if redis_url else None
        self.interval = interval
        self.peak_rss: dict[str, int] = dict.fromkeys(groups, 0)
        self.cpu_start: dict[str, float] = {}
        self.cpu_end: dict[str, float] = {}
        self.peak_redis_mem = 0
        self.series: list[dict[str, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._t0 = 0.0

    @staticmethod
    def _machine_busy() -> float:
        t = psutil.cpu_times()
        return sum(t) - t.idle - getattr(t, "iowait", 0.0)

    def machine_busy(self) -> float:
        """CPU seconds the whole machine (every tenant) spent busy during the run."""
        return self.machine_end - self.machine_start

    def _cpu(self) -> dict[str, float]:
        return {n: sum(tree_cpu(p) for p in ps) for n, ps in self.procs.items()}

    def _sample(self) -> None:
        row: dict[str, float] = {"t": time.time() - self._t0}
        cpu = self._cpu()
        for name, procs in self.procs.items():
            rss = sum(tree_rss(p) for p in procs)
            self.peak_rss[name] = max(self.peak_rss[name], rss)
            row[f"{name}_cpu"] = cpu[name]
            row[f"{name}_rss"] = rss
        if self.redis is not None:
            with contextlib.suppress(redis.RedisError):
                mem = int(self.redis.info("memory")["used_memory"])
                self.peak_redis_mem = max(self.peak_redis_mem, mem)
                row["redis_mem"] = mem
        self.series.append(row)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> Sampler:
        self._t0 = time.time()
        self.cpu_start = self._cpu()
        self.machine_start = self._machine_busy()
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
        self.cpu_end = self._cpu()
        self.machine_end = self._machine_busy()
        if self.redis is not None:
            self.redis.close()

    def cpu_seconds(self, name: str) -> float:
        return self.cpu_end[name] - self.cpu_start[name]

    def busiest(self, name: str, window_s: float = 2.0) -> float:
        """Highest CPU use (cores) of a group over any `window_s` stretch."""
        best = 0.0
        rows = self.series
        j = 0
        for i, row in enumerate(rows):
            while rows[j]["t"] < row["t"] - window_s:
                j += 1
            if i > j and row["t"] > rows[j]["t"]:
                best = max(
                    best,
                    (row[f"{name}_cpu"] - rows[j][f"{name}_cpu"]) / (row["t"] - rows[j]["t"]),
                )
        return best


def redis_used_memory(url: str) -> int:
    client = redis.Redis.from_url(url)
    try:
        return int(client.info("memory")["used_memory"])
    finally:
        client.close()


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def latency_summary(values: list[float]) -> dict[str, Any]:
    return {
        "p50": percentile(values, 0.50),
        "p95": percentile(values, 0.95),
        "p99": percentile(values, 0.99),
        "n": len(values),
    }
