"""Tables (markdown) and plots (PNG) from the JSON results, for docs/benchmarks.md."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def _load(out: Path, name: str) -> dict[str, Any] | None:
    path = out / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def f(v: Any, digits: int = 2) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def run_row(r: dict[str, Any]) -> str:
    o = r["overhead_s"]
    cpu = r.get("worker_cpu_s_per_job", r.get("bench_cpu_s_per_job"))
    rss = r.get("worker_peak_rss_mb", r.get("bench_peak_rss_mb"))
    return (
        f"| {r['system']} | {r['completed']}/{r['jobs']} | {f(r['jobs_per_s'], 1)} "
        f"| {f(o['p50'])} | {f(o['p95'])} | {f(o['p99'])} | {f(r['total_requests_per_job'])} "
        f"| {f(cpu * 1000 if cpu is not None else None, 1)} | {f(rss, 0)} "
        f"| {f(r.get('emulator_cpu_cores_mean'))} |"
    )


RUN_HEADER = (
    "| system | jobs done | jobs/s | overhead p50 (s) | p95 | p99 | requests/job "
    "| CPU ms/job | peak RSS MB | emulator cores |\n|---|---|---|---|---|---|---|---|---|---|"
)


def endpoint_table(runs: list[dict[str, Any]]) -> str:
    routes = sorted({k for r in runs for k in r["requests_per_job"]})
    lines = ["| endpoint | " + " | ".join(r["system"] for r in runs) + " |"]
    lines.append("|---" * (len(runs) + 1) + "|")
    for route in routes:
        cells = [f(r["requests_per_job"].get(route, 0.0)) for r in runs]
        lines.append(f"| `{route}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ratio_table(ratios: dict[str, Any]) -> str:
    lines = [
        "| ratio | throughput | requests/job | overhead p50 | overhead p95 |",
        "|---|---|---|---|---|",
    ]
    for name, r in ratios.items():
        lines.append(
            f"| {name} | {f(r['throughput'])}× | {f(r['requests_per_job'])}× "
            f"| {f(r['overhead_p50'])}× | {f(r['overhead_p95'])}× |"
        )
    return "\n".join(lines)


def redis_table(r: dict[str, Any]) -> str:
    return (
        "| Redis bytes / pending job | bytes / job at peak live | bytes / finished job "
        "| MEMORY USAGE of a finished job hash | peak used_memory MB |\n|---|---|---|---|---|\n"
        f"| {f(r['redis_bytes_per_pending_job'], 0)} "
        f"| {f(r['redis_bytes_per_job_at_peak_live'], 0)} "
        f"| {f(r['redis_bytes_per_finished_job'], 0)} | {f(r['job_hash_memory_usage_bytes'], 0)} "
        f"| {f(r['redis_peak_used_memory_mb'], 1)} |"
    )


def build(out: Path, docs: Path) -> None:
    parts: list[str] = []
    for name in ("throughput-0.5s", "throughput-5s", "throughput-5s-hint1000"):
        d = _load(out, name)
        if not d:
            continue
        parts.append(f"### {name}\n\n{RUN_HEADER}")
        parts.extend(run_row(r) for r in d["runs"])
        parts.append("\nRequests per job by endpoint:\n\n" + endpoint_table(d["runs"]))
        parts.append("\n" + ratio_table(d["ratios"]))
        if "tutorial_5000_job_estimate_s" in d:
            parts.append(
                f"\nTutorial loop, {d['args']['jobs']} jobs at its measured rate: "
                f"{d['tutorial_5000_job_estimate_s']:.0f} s; askq: {d['runs'][0]['wall_s']:.0f} s."
            )
        parts.append("\nRedis (askq run):\n\n" + redis_table(d["runs"][0]) + "\n")

    t = _load(out, "throughput-0.5s")
    if t and "ratios_by_variant" in t:
        plot_throughput(t, docs / "bench-throughput.png")

    c = _load(out, "cold")
    if c:
        parts.append(
            "### cold (one batch submitted at once, nothing learned)\n\n| hint | system "
            "| requests/job | GET run/job | overhead p50 | p95 | jobs/s |\n"
            "|---|---|---|---|---|---|---|"
        )
        for r in c["runs"]:
            gets = r["requests_per_job"].get("GET /v1/threads/{thread_id}/runs/{run_id}")
            parts.append(
                f"| {r['poll_after_ms'] or '–'} | {r['system']} | {f(r['total_requests_per_job'])} "
                f"| {f(gets)} | {f(r['overhead_s']['p50'])} | {f(r['overhead_s']['p95'])} "
                f"| {f(r['jobs_per_s'], 1)} |"
            )
        parts.append("")

    for name in ("protocols", "protocols-hint1000"):
        pr = _load(out, name)
        if pr:
            from bench.protocols import table

            parts.append(f"### {name}\n\n{table(pr['runs'])}\n")

    w = _load(out, "workers")
    if w:
        parts.append(
            "### workers\n\n| workers | jobs/s | overhead p50 | p95 | CPU ms/job | worker cores "
            "| Redis cores | emulator cores (mean / peak 2 s) |\n|---|---|---|---|---|---|---|---|"
        )
        for r in w["runs"]:
            parts.append(
                f"| {r['workers']} | {f(r['jobs_per_s'], 1)} | {f(r['overhead_s']['p50'])} "
                f"| {f(r['overhead_s']['p95'])} | {f(r['worker_cpu_s_per_job'] * 1000, 1)} "
                f"| {f(r['worker_cpu_cores_mean'])} | {f(r['redis_cpu_cores_mean'])} "
                f"| {f(r['emulator_cpu_cores_mean'])} / {f(r['emulator_cpu_cores_peak'])} |"
            )
        plot_workers(w, docs / "bench-workers.png")

    p = _load(out, "policy")
    if p:
        parts.append(
            "### policy (live)\n\n| workload | hint | poller | requests/job | GET run/job "
            "| overhead p50 | p95 |\n|---|---|---|---|---|---|---|"
        )
        for r in p["runs"]:
            gets = r["requests_per_job"].get("GET /v1/threads/{thread_id}/runs/{run_id}")
            parts.append(
                f"| {r['workload']} | {r['poll_after_ms'] or '–'} | {r['system']} "
                f"| {f(r['total_requests_per_job'])} | {f(gets)} | {f(r['overhead_s']['p50'])} "
                f"| {f(r['overhead_s']['p95'])} |"
            )
        parts.append(simulated_table(p["simulated"]))
        plot_policy(p, docs / "bench-overhead.png")

    s = _load(out, "scale-10000")
    if s:
        r = s["runs"][0]
        parts.append(f"### scale\n\n{RUN_HEADER}\n{run_row(r)}\n")
        parts.append(
            f"max active runs at the emulator: {r['max_active_runs']}; peak live jobs seen "
            f"in Redis: {r['peak_live_jobs']}; worker peak RSS {r['worker_peak_rss_mb']:.0f} MB\n"
        )
        parts.append(redis_table(r) + "\n")
        late = r.get("poll_lateness_s")
        if late:
            parts.append(
                f"poll lateness (taken after due): p50 ≤ {late['p50_le']} s, p95 ≤ "
                f"{late['p95_le']} s over {late['polls']} polls; histogram {late['histogram']}\n"
            )

    prof = _load(out, "profile")
    if prof:
        parts.append(
            "### profile (py-spy, worker process, self time)\n\n| share | frame |\n|---|---|"
        )
        parts.extend(
            f"| {row['share'] * 100:.1f}% | `{row['frame']}` |"
            for row in prof["profile"]["self"][:20]
        )
        parts.append("\n| inclusive | frame |\n|---|---|")
        parts.extend(
            f"| {row['share'] * 100:.1f}% | `{row['frame']}` |"
            for row in prof["profile"]["inclusive"][:40]
        )
    (out / "tables.md").write_text("\n".join(parts) + "\n")
    print(f"wrote {out / 'tables.md'}")


def simulated_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "\nSimulated (zero network time, 5,000 durations per workload):\n",
        "| workload | policy | requests/job | overhead p50 | p95 |",
        "|---|---|---|---|---|",
    ]
    lines.extend(
        f"| {r['workload']} | {r['policy']} | {f(r['requests_per_job'])} "
        f"| {f(r['overhead_p50'])} | {f(r['overhead_p95'])} |"
        for r in rows
    )
    return "\n".join(lines)


def plot_throughput(t: dict[str, Any], path: Path) -> None:
    """jobs/s and CPU per job of each askq variant and each asyncio pool size, one run."""
    runs = [r for r in t["runs"] if r["system"] != "tutorial"]
    names = [r["system"].replace(", ", "\n") for r in runs]
    colors = ["tab:blue" if r["system"].startswith("askq") else "tab:gray" for r in runs]
    cpu = [
        1000 * (r.get("worker_cpu_s_per_job") or r.get("bench_cpu_s_per_job") or 0) for r in runs
    ]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.bar(names, [r["jobs_per_s"] or 0 for r in runs], color=colors)
    left.set_ylabel("jobs/s (one process, 0.5 s runs)")
    right.bar(names, cpu, color=colors)
    right.set_ylabel("CPU ms per job (that process)")
    for ax in (left, right):
        ax.tick_params(axis="x", labelsize=7)
    fig.suptitle("askq worker (blue) vs asyncio + httpx by HTTP pool size (grey), same run")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_workers(w: dict[str, Any], path: Path) -> None:
    runs = w["runs"]
    xs = [r["workers"] for r in runs]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(xs, [r["jobs_per_s"] for r in runs], "o-", label="askq jobs/s")
    ax.set_xlabel("worker processes (threads pool, 16 threads each)")
    ax.set_ylabel("jobs / s (0.5 s runs)")
    ax.set_xticks(xs)
    ax2 = ax.twinx()
    for key, style, label in (
        ("worker_cpu_cores_mean", "s--", "workers, cores"),
        ("redis_cpu_cores_mean", "^--", "Redis, cores"),
        ("emulator_cpu_cores_mean", "v--", "emulator, cores"),
    ):
        ax2.plot(xs, [r[key] or 0 for r in runs], style, alpha=0.6, label=label)
    ax2.set_ylabel("CPU cores used (mean)")
    ax2.set_ylim(0, 2.2)
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], loc="lower right", fontsize=8)
    ax.set_title("askq throughput vs worker processes (2-core machine)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_policy(p: dict[str, Any], path: Path) -> None:
    runs = [r for r in p["runs"] if r["workload"] != "mixed"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    keys = sorted({(r["system"], r["poll_after_ms"]) for r in runs}, key=str)
    for system, hint in keys:
        sel = sorted(
            (r for r in runs if r["system"] == system and r["poll_after_ms"] == hint),
            key=lambda r: float(r["workload"]),
        )
        xs = [float(r["workload"]) for r in sel]
        label = f"{system}" + (f", hint {hint} ms" if hint else ", no hint")
        label = label.replace("asyncio-sdk", "SDK loop").replace(
            "asyncio-askq", "asyncio, askq policy"
        )
        axes[0].plot(xs, [r["overhead_s"]["p50"] for r in sel], "o-", label=label)
        axes[1].plot(xs, [r["total_requests_per_job"] for r in sel], "o-", label=label)
    axes[0].set_xlabel("run time (s)")
    axes[0].set_ylabel("latency overhead p50 (s)")
    axes[1].set_xlabel("run time (s)")
    axes[1].set_ylabel("API requests per job")
    for ax in axes:
        ax.set_xscale("log")
        ax.minorticks_off()
        ax.set_xticks([2, 5, 30], ["2", "5", "30"])
    axes[1].legend(fontsize=7)
    fig.suptitle("Latency overhead and requests per job vs run time")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
