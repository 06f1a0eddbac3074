"""`python -m bench.real_model`: how fast the cached real model generates, alone and in parallel.

Starts llama-server from the real-model cache (build it first: `scripts/real-model build`),
asks it directly (no askq in between) for fixed-length answers, and prints tokens/s as the
server itself times them (`timings.predicted_per_second`) and as the wall clock sees them for
several requests at once. Writes bench/results/real-model.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from emulator import real_model
from producer.local_redis import free_port

RESULTS = Path(__file__).resolve().parent / "results"
PROMPT = "Write a long story about a lighthouse keeper and a storm."


def ask(url: str, tokens: int) -> dict[str, Any]:
    body = {
        "model": real_model.MODEL_ALIAS,
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": tokens,
        "ignore_eos": True,  # llama.cpp: always generate `tokens`, so runs compare
    }
    reply = httpx.post(f"{url}/chat/completions", json=body, timeout=600)
    reply.raise_for_status()
    data: dict[str, Any] = reply.json()
    return data


def measure(url: str, tokens: int, parallel: int) -> dict[str, float]:
    started = time.perf_counter()
    with ThreadPoolExecutor(parallel) as pool:
        answers = list(pool.map(lambda _: ask(url, tokens), range(parallel)))
    wall = time.perf_counter() - started
    generated = sum(a["usage"]["completion_tokens"] for a in answers)
    per_request = [a["timings"]["predicted_per_second"] for a in answers]
    return {
        "parallel": parallel,
        "tokens": generated,
        "wall_s": round(wall, 2),
        "tokens_per_s_total": round(generated / wall, 1),
        "tokens_per_s_per_request": round(sum(per_request) / len(per_request), 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.real_model", description=__doc__)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if not real_model.is_cached():
        print("bench.real_model: not cached; run scripts/real-model build", file=sys.stderr)
        return 2
    log = Path(tempfile.gettempdir()) / "askq-bench-llama-server.log"
    server = real_model.start_server(free_port(), log, slots=4)
    try:
        ask(server.url, 8)  # warm-up: first request loads the weights into the cache
        rows = [measure(server.url, args.tokens, n) for n in (1, 2, 4)]
    finally:
        server.stop()
    for row in rows:
        print(json.dumps(row))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "real-model.json").write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
