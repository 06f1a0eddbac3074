"""`python -m bench SUBCOMMAND`: askq benchmarks against the local emulator.

Every subcommand starts its own private Redis and emulator process, writes its figures to
`bench/results/NAME.json` (or `--out DIR`), and is bounded by deadlines. `report` turns the
JSON files into the tables and plots of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.infra import ROOT, Stack
from bench.workloads import durations

RESULTS = Path(__file__).resolve().parent / "results"


def save(out: Path, name: str, data: Any) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    path.write_text(json.dumps(data, indent=2, default=str))
    print(f"wrote {path}", file=sys.stderr)
    return path


def brief(r: dict[str, Any]) -> str:
    o = r["overhead_s"]
    fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
    return (
        f"{r['system']:<22} jobs={r['completed']}/{r['jobs']} {fmt(r['jobs_per_s'])} jobs/s "
        f"req/job={r['total_requests_per_job']:.2f} overhead p50={fmt(o['p50'])} "
        f"p95={fmt(o['p95'])} p99={fmt(o['p99'])} wall={r['wall_s']:.1f}s"
    )


def machine() -> dict[str, Any]:
    def sh(cmd: str) -> str:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()

    import celery
    import httpx
    import kombu
    import redis as redis_py

    return {
        "nproc": sh("nproc"),
        "cpu": sh("lscpu | grep 'Model name' | sed 's/.*: *//'"),
        "memory": sh("free -h | sed -n 2p"),
        "python": platform.python_version(),
        "redis_server": sh("redis-server --version"),
        "celery": celery.__version__,
        "kombu": kombu.__version__,
        "redis_py": redis_py.__version__,
        "httpx": httpx.__version__,
        "kernel": platform.release(),
        "load_at_start": sh("cat /proc/loadavg"),
        # the code measured: HEAD plus a digest of uncommitted changes to the askq packages
        "git_head": sh(f"git -C {ROOT} rev-parse --short HEAD"),
        "askq_diff_sha1": sh(
            f"git -C {ROOT} diff HEAD -- worker producer emulator | sha1sum | cut -c1-12"
        ),
        "when": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


# -- subcommands ------------------------------------------------------------------------


def cmd_throughput(args: argparse.Namespace) -> None:
    """askq vs the tutorial loop vs asyncio, same emulator, same run time. The asyncio
    baseline runs once per HTTP pool size (--async-pools) and the fastest counts; askq runs
    once per worker variant (--askq-variants: packing on/off, threads/prefork)."""
    from bench.askq_run import run_askq
    from bench.baselines import run_asyncio, run_tutorial

    hint = args.hint_ms
    results: dict[str, Any] = {"machine": machine(), "args": vars(args) | {"func": None}}
    askq_runs, async_runs = [], []
    with Stack.start() as stack:
        rt = durations(str(args.run_time), args.jobs)
        for variant in args.askq_variants.split(","):
            pool, packed = variant.split(":") if ":" in variant else (variant, "packed")
            env = {"ASKQ_MAX_INFLIGHT": str(args.inflight)}
            if packed == "single":
                env["ASKQ_MAX_JOBS_PER_MESSAGE"] = "1"
            concurrency = args.concurrency if pool == "threads" else args.prefork_concurrency
            a = run_askq(
                stack, rt, concurrency=concurrency, poll_after_ms=hint, env=env,
                timeout_s=args.timeout, label=f"askq {pool}, {packed}", pool=pool,
            )  # fmt: skip
            print(brief(a), f"cpu ms/job {a['worker_cpu_s_per_job'] * 1000:.1f}", file=sys.stderr)
            askq_runs.append(a)
        for http_pool in [int(p) for p in args.async_pools.split(",")]:
            b = run_asyncio(
                stack, durations(str(args.run_time), args.async_jobs or args.jobs),
                inflight=args.inflight, poll="askq", poll_after_ms=hint, timeout_s=args.timeout,
                label=f"asyncio, pool {http_pool}", pool=http_pool,
            )  # fmt: skip
            print(brief(b), f"cpu ms/job {b['bench_cpu_s_per_job'] * 1000:.1f}", file=sys.stderr)
            async_runs.append(b)
        t = run_tutorial(
            stack, durations(str(args.run_time), args.tutorial_jobs),
            threads=args.concurrency, poll_after_ms=hint, timeout_s=args.timeout,
        )  # fmt: skip
        print(brief(t), file=sys.stderr)
    best_async = max(async_runs, key=lambda r: r["jobs_per_s"] or 0)
    a = askq_runs[0]
    results["runs"] = [*askq_runs, *async_runs, t]
    results["best_asyncio"] = best_async["system"]
    results["ratios"] = ratios(a, {"tutorial": t, "asyncio": best_async})
    results["ratios_by_variant"] = {
        r["system"]: ratios(r, {"asyncio": best_async})["askq/asyncio"] for r in askq_runs
    }
    if t["jobs_per_s"]:
        results["tutorial_5000_job_estimate_s"] = args.jobs / t["jobs_per_s"]
    print(json.dumps(results["ratios_by_variant"], indent=2))
    save(args.out, args.name or f"throughput-{args.run_time}s-hint{hint}", results)


def cmd_cold(args: argparse.Namespace) -> None:
    """A cold batch: N runs of one duration submitted at once to a fresh Redis (nothing
    learned), askq (predictive, and back-off only) vs the tutorial loop, hint off and on."""
    from bench.askq_run import run_askq
    from bench.baselines import run_tutorial

    results: dict[str, Any] = {"machine": machine(), "args": vars(args) | {"func": None}}
    runs = []
    with Stack.start() as stack:
        rt = durations(str(args.run_time), args.jobs)
        for hint in (None, args.hint_ms):
            env = {"ASKQ_MAX_INFLIGHT": str(args.jobs + 10)}
            for label, extra in (
                ("askq", {}),
                ("askq back-off only", {"ASKQ_POLL_PREDICT": "false"}),
            ):
                r = run_askq(
                    stack, rt, concurrency=args.concurrency, poll_after_ms=hint,
                    env={**env, **extra}, timeout_s=args.timeout, label=label,
                )  # fmt: skip
                runs.append(r)
                print(hint, brief(r), file=sys.stderr)
            t = run_tutorial(
                stack, rt, threads=args.jobs, poll_after_ms=hint, timeout_s=args.timeout
            )
            runs.append(t)
            print(hint, brief(t), file=sys.stderr)
    results["runs"] = runs
    save(args.out, args.name or "cold", results)


def ratios(a: dict[str, Any], baselines: dict[str, dict[str, Any]]) -> dict[str, Any]:
    out = {}
    for name, b in baselines.items():
        ao, bo = a["overhead_s"], b["overhead_s"]
        out[f"askq/{name}"] = {
            "throughput": (a["jobs_per_s"] or 0) / b["jobs_per_s"] if b["jobs_per_s"] else None,
            "requests_per_job": a["total_requests_per_job"] / b["total_requests_per_job"],
            "overhead_p50": ao["p50"] / bo["p50"] if ao["p50"] and bo["p50"] else None,
            "overhead_p95": ao["p95"] / bo["p95"] if ao["p95"] and bo["p95"] else None,
        }
    return out


def cmd_policy(args: argparse.Namespace) -> None:
    """Requests per job and latency overhead per poll policy, per workload, live."""
    from bench.askq_run import run_askq
    from bench.baselines import run_asyncio
    from bench.simulate import table

    workloads = args.workloads.split(",")
    results: dict[str, Any] = {"machine": machine(), "args": vars(args) | {"func": None}}
    results["simulated"] = table({w: durations(w, 5000) for w in workloads}, args.hint_ms / 1000)
    runs = []
    with Stack.start() as stack:
        for w in workloads:
            rt = durations(w, args.jobs)
            timeout = max(rt) * 3 + len(rt) / args.rate + 60
            for hint in (None, args.hint_ms):
                for poll in ("sdk", "askq"):
                    r = run_asyncio(
                        stack, rt, inflight=len(rt), poll=poll, poll_after_ms=hint,
                        timeout_s=timeout, rate=args.rate,
                    )  # fmt: skip
                    r["workload"] = w
                    print(w, hint, brief(r), file=sys.stderr)
                    runs.append(r)
                env = {"ASKQ_MAX_INFLIGHT": str(len(rt) + 10)}
                variants = [("askq worker", {**env, "ASKQ_POLL_PREDICT": "false"})]
                if args.predict:
                    variants.append(("askq worker predict", {**env, "ASKQ_POLL_PREDICT": "true"}))
                for label, venv in variants:
                    r = run_askq(
                        stack, rt, concurrency=args.concurrency, poll_after_ms=hint,
                        env=venv, timeout_s=timeout, label=label, rate=args.rate,
                    )  # fmt: skip
                    r["workload"] = w
                    print(w, hint, brief(r), file=sys.stderr)
                    runs.append(r)
                save(args.out, args.name or "policy", results | {"runs": runs})
    results["runs"] = runs
    save(args.out, args.name or "policy", results)


def cmd_protocols(args: argparse.Namespace) -> None:
    """Assistants, Responses and Agents sessions, polled and with webhooks, same batch."""
    from bench.protocols import run_protocols, table

    results: dict[str, Any] = {"machine": machine(), "args": vars(args) | {"func": None}}
    rt = durations(args.workload, args.jobs)
    with Stack.start() as stack:
        runs = run_protocols(
            stack,
            rt,
            concurrency=args.concurrency,
            rate=args.rate,
            timeout_s=args.timeout,
            webhook_poll_s=args.webhook_poll_s,
            poll_after_ms=args.hint_ms,
        )
    results["runs"] = runs
    results["load_at_end"] = machine()["load_at_start"]
    save(args.out, args.name or "protocols", results)
    print(table(runs))


def cmd_workers(args: argparse.Namespace) -> None:
    """Throughput with 1, 2, 4 worker processes; CPU of worker, Redis and emulator."""
    from bench.askq_run import run_askq

    results: dict[str, Any] = {"machine": machine(), "args": vars(args) | {"func": None}}
    runs = []
    with Stack.start() as stack:
        for count in [int(c) for c in args.counts.split(",")]:
            r = run_askq(
                stack, durations(str(args.run_time), args.jobs), workers=count,
                concurrency=args.concurrency, poll_after_ms=args.hint_ms,
                env={"ASKQ_MAX_INFLIGHT": str(args.inflight)}, timeout_s=args.timeout,
                label=f"askq x{count}",
            )  # fmt: skip
            print(brief(r), file=sys.stderr)
            print(
                f"   cpu cores: worker {r['worker_cpu_cores_mean']:.2f} "
                f"redis {r['redis_cpu_cores_mean']:.2f} "
                f"emulator {r['emulator_cpu_cores_mean'] or 0:.2f}",
                file=sys.stderr,
            )
            runs.append(r)
            save(args.out, args.name or "workers", results | {"runs": runs})
    results["runs"] = runs
    save(args.out, args.name or "workers", results)


def cmd_scale(args: argparse.Namespace) -> None:
    """How many runs one worker process keeps in flight: N live jobs of long runs."""
    from bench.askq_run import run_askq

    results: dict[str, Any] = {"machine": machine(), "args": vars(args) | {"func": None}}
    with Stack.start() as stack:
        env = {
            "ASKQ_MAX_INFLIGHT": str(args.jobs + 100),
            "ASKQ_POLL_PREDICT": "true" if args.predict else "false",
        }
        r = run_askq(
            stack, durations(str(args.run_time), args.jobs), concurrency=args.concurrency,
            poll_after_ms=args.hint_ms, env=env, timeout_s=args.timeout, label="askq scale",
        )  # fmt: skip
        print(brief(r), file=sys.stderr)
        late = r["poll_lateness_s"]
        print(
            f"   peak live {r['peak_live_jobs']}, RSS {r['worker_peak_rss_mb']:.0f} MB, "
            f"poll lateness p50 <= {late['p50_le']} s, p95 <= {late['p95_le']} s "
            f"({late['polls']} polls), cpu ms/job {r['worker_cpu_s_per_job'] * 1000:.1f}",
            file=sys.stderr,
        )
    results["runs"] = [r]
    save(args.out, args.name or f"scale-{args.jobs}", results)


def cmd_profile(args: argparse.Namespace) -> None:
    """py-spy on the worker process during a throughput run (0.5 s runs by default)."""
    import threading

    from bench.askq_run import run_askq
    from bench.profile import record, summarize

    out_dir = args.out
    out_dir.mkdir(parents=True, exist_ok=True)
    raw = out_dir / f"{args.name or 'profile'}.folded"
    results: dict[str, Any] = {"machine": machine(), "args": vars(args) | {"func": None}}
    with Stack.start() as stack:
        original = stack.start_workers
        holder: dict[str, Any] = {}

        def start_and_profile(*a: Any, **kw: Any) -> Any:
            started = original(*a, **kw)
            pid = started[0].process.pid
            t = threading.Thread(
                target=lambda: holder.setdefault(
                    "rc", record(pid, args.duration, raw, gil=args.gil)
                ),
                daemon=True,
            )
            t.start()
            holder["thread"] = t
            return started

        stack.start_workers = start_and_profile  # type: ignore[method-assign]
        r = run_askq(
            stack, durations(str(args.run_time), args.jobs), concurrency=args.concurrency,
            env={"ASKQ_MAX_INFLIGHT": str(args.inflight)}, timeout_s=args.timeout,
        )  # fmt: skip
        holder["thread"].join(args.duration + 30)
        print(brief(r), file=sys.stderr)
    results["run"] = r
    results["profile"] = summarize(raw)
    save(args.out, args.name or "profile", results)
    for row in results["profile"]["self"][:25]:
        print(f"{row['share'] * 100:5.1f}%  {row['frame']}")


def cmd_variants(args: argparse.Namespace) -> None:
    """Before/after for hot-path changes, applied by bench.variant_app (same run each)."""
    from bench.askq_run import run_askq

    results: dict[str, Any] = {"machine": machine(), "args": vars(args) | {"func": None}}
    runs = []
    with Stack.start() as stack:
        for _ in range(args.repeat):
            for variant in args.variants.split(";"):
                r = run_askq(
                    stack, durations(str(args.run_time), args.jobs), concurrency=args.concurrency,
                    env={"ASKQ_MAX_INFLIGHT": str(args.inflight), "BENCH_VARIANT": variant},
                    timeout_s=args.timeout, label=variant or "as is", app="bench.variant_app",
                )  # fmt: skip
                print(
                    brief(r), f"cpu ms/job {r['worker_cpu_s_per_job'] * 1000:.1f}", file=sys.stderr
                )
                runs.append(r)
                save(args.out, args.name or "variants", results | {"runs": runs})


def cmd_simulate(args: argparse.Namespace) -> None:
    from bench.simulate import table

    rows = table(
        {w: durations(w, args.jobs) for w in args.workloads.split(",")}, args.hint_ms / 1000
    )
    for r in rows:
        print(
            f"{r['workload']:>6}  {r['policy']:<58} {r['requests_per_job']:6.2f} req/job  "
            f"p50 {r['overhead_p50']:.2f} s  p95 {r['overhead_p95']:.2f} s"
        )
    save(args.out, args.name or "simulated", {"rows": rows})


def cmd_report(args: argparse.Namespace) -> None:
    from bench.report import build

    build(args.out, Path(args.docs))


def cmd_quick(args: argparse.Namespace) -> None:
    """Everything, small: a smoke run that finishes in under three minutes."""
    base = [sys.executable, "-m", "bench"]
    out = ["--out", str(args.out)]
    steps = [
        ["throughput", "--run-time", "0.5", "--jobs", "300", "--tutorial-jobs", "32",
         "--askq-variants", "threads", "--async-pools", "16", "--name", "throughput-0.5s"],
        ["throughput", "--run-time", "5", "--jobs", "300", "--tutorial-jobs", "32",
         "--askq-variants", "threads", "--async-pools", "16", "--name", "throughput-5s"],
        ["cold", "--run-time", "2.5", "--jobs", "40", "--name", "cold"],
        ["policy", "--workloads", "2", "--jobs", "40", "--name", "policy"],
        ["workers", "--counts", "1,2", "--jobs", "300", "--name", "workers"],
        ["scale", "--jobs", "1000", "--run-time", "5", "--name", "scale-10000"],
        ["report", "--docs", str(args.out)],
    ]  # fmt: skip
    for step in steps:
        print("$ python -m bench", " ".join(step), file=sys.stderr)
        subprocess.run([*base, *step, *out], check=True, timeout=300)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--out", type=Path, default=RESULTS, help="where JSON results go")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--name", help="result file name (without .json)")
        p.add_argument("--out", type=Path, default=RESULTS)
        p.add_argument("--concurrency", type=int, default=16, help="worker threads")
        p.add_argument("--hint-ms", type=int, default=None, help="openai-poll-after-ms")
        p.add_argument("--timeout", type=float, default=900.0, help="deadline per run (s)")

    p = sub.add_parser("throughput", help="askq vs tutorial loop vs asyncio")
    common(p)
    p.add_argument("--run-time", type=float, default=5.0)
    p.add_argument("--jobs", type=int, default=5000)
    p.add_argument("--async-jobs", type=int, default=None, help="default: --jobs")
    p.add_argument("--tutorial-jobs", type=int, default=160, help="the loop is slow: a sample")
    p.add_argument("--inflight", type=int, default=256, help="askq MAX_INFLIGHT = semaphore")
    p.add_argument(
        "--askq-variants", default="threads,threads:single,prefork",
        help="POOL[:single] per askq run (single: one job a message, packing off)",
    )  # fmt: skip
    p.add_argument("--prefork-concurrency", type=int, default=4, help="processes (prefork)")
    p.add_argument("--async-pools", default="16,64,256", help="httpx pool sizes to try")
    p.set_defaults(func=cmd_throughput)

    p = sub.add_parser("cold", help="a cold batch submitted at once: learning as it goes")
    common(p)
    p.add_argument("--run-time", type=float, default=2.5)
    p.add_argument("--jobs", type=int, default=160)
    p.set_defaults(func=cmd_cold, hint_ms=1000)

    p = sub.add_parser("policy", help="poll policies: requests/job vs latency overhead")
    common(p)
    p.add_argument("--workloads", default="2,5,30,mixed")
    p.add_argument("--jobs", type=int, default=200)
    p.add_argument("--predict", action="store_true", help="also run ASKQ_POLL_PREDICT=true")
    p.add_argument("--rate", type=float, default=20.0, help="arrivals per s (paced, not a burst)")
    p.set_defaults(func=cmd_policy, hint_ms=500)

    p = sub.add_parser("protocols", help="the 3 styles, polling vs webhooks, same batch")
    common(p)
    p.add_argument("--workload", default="5", help="run seconds, or mixed")
    p.add_argument("--jobs", type=int, default=200)
    p.add_argument("--rate", type=float, default=20.0, help="arrivals per s (paced)")
    p.add_argument("--webhook-poll-s", type=float, default=60.0)
    p.set_defaults(func=cmd_protocols, timeout=300.0)

    p = sub.add_parser("workers", help="throughput with 1, 2, 4 worker processes")
    common(p)
    p.add_argument("--counts", default="1,2,4")
    p.add_argument("--run-time", type=float, default=0.5)
    p.add_argument("--jobs", type=int, default=3000)
    p.add_argument("--inflight", type=int, default=256)
    p.set_defaults(func=cmd_workers)

    p = sub.add_parser("scale", help="live jobs held by one worker process")
    common(p)
    p.add_argument("--jobs", type=int, default=10000)
    p.add_argument("--run-time", type=float, default=30.0)
    p.add_argument("--predict", action="store_true")
    p.set_defaults(func=cmd_scale)

    p = sub.add_parser("profile", help="py-spy the worker's hot path")
    common(p)
    p.add_argument("--run-time", type=float, default=0.5)
    p.add_argument("--jobs", type=int, default=2000)
    p.add_argument("--inflight", type=int, default=256)
    p.add_argument("--duration", type=int, default=20)
    p.add_argument("--gil", action="store_true", help="only samples holding the GIL (CPU)")
    p.set_defaults(func=cmd_profile)

    p = sub.add_parser("variants", help="before/after of hot-path changes (bench.variant_app)")
    common(p)
    p.add_argument("--variants", default=";noevents;nocount;noevents,nocount")
    p.add_argument("--run-time", type=float, default=0.5)
    p.add_argument("--jobs", type=int, default=2000)
    p.add_argument("--inflight", type=int, default=256)
    p.add_argument("--repeat", type=int, default=1)
    p.set_defaults(func=cmd_variants)

    p = sub.add_parser("simulate", help="poll policies on paper (instant)")
    p.add_argument("--name")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--workloads", default="2,5,30,mixed")
    p.add_argument("--jobs", type=int, default=5000)
    p.add_argument("--hint-ms", type=int, default=500)
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("report", help="tables and plots for docs/benchmarks.md")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--docs", default=str(Path(__file__).resolve().parent.parent / "docs"))
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("quick", help="all of it, small (< 3 min)")
    p.add_argument("--out", type=Path, default=RESULTS / "quick")
    p.set_defaults(func=cmd_quick)

    args = parser.parse_args(argv)
    # SIGTERM (and SIGINT, which a background job of a script ignores) unwinds the stack, so
    # the private Redis, the emulator and the workers are stopped on the way out
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    args.func(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
