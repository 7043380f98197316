"""Online serving benchmark: N concurrent streaming clients against the HTTP API.

Prompts and output lengths are drawn from a seeded generator; EOS is ignored so every request produces its
drawn length. Prints request throughput, output tokens/s and TTFT / TPOT / ITL / end-to-end p50 and p99.

    python benchmarks/benchmark_serving.py --launch                  # starts the server on the built-in model
    python benchmarks/benchmark_serving.py --base-url http://127.0.0.1:2242 --concurrency 16
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine  # noqa: E402

WORDS = ("the model server learns from every request and answers questions about cats dogs rivers numbers "
         "colours cities music books science history weather").split()


@dataclass
class Result:
    ok: bool
    ttft: float = 0.0
    e2e: float = 0.0
    itls: list[float] = field(default_factory=list)
    output_tokens: int = 0


async def one_request(client: httpx.AsyncClient, url: str, model: str, prompt: str, max_tokens: int) -> Result:
    body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "stream": True, "ignore_eos": True,
            "temperature": 0.8, "stream_options": {"include_usage": True}}
    start = time.perf_counter()
    last = None
    res = Result(ok=False)
    async with client.stream("POST", url + "/v1/completions", json=body) as r:
        if r.status_code != 200:
            print(f"request failed: {r.status_code} {(await r.aread())[:200]!r}", file=sys.stderr)
            return res
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            now = time.perf_counter()
            if chunk.get("usage"):
                res.output_tokens = chunk["usage"]["completion_tokens"]
            if not chunk.get("choices") or not chunk["choices"][0]["text"]:
                continue
            if last is None:
                res.ttft = now - start
            else:
                res.itls.append(now - last)
            last = now
    res.e2e = time.perf_counter() - start
    res.ok = True
    return res


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q / 100 * len(values)))]


async def run(args) -> None:
    rng = random.Random(args.seed)
    work = [(" ".join(rng.choice(WORDS) for _ in range(rng.randint(*args.prompt_words))), rng.randint(*args.output_len))
            for _ in range(args.num_requests)]
    sem = asyncio.Semaphore(args.concurrency)
    async with httpx.AsyncClient(timeout=600) as client:
        model = (await client.get(args.base_url + "/v1/models")).json()["data"][0]["id"]

        async def limited(prompt: str, n: int) -> Result:
            async with sem:
                return await one_request(client, args.base_url, model, prompt, n)

        start = time.perf_counter()
        results = await asyncio.gather(*(limited(p, n) for p, n in work))
        elapsed = time.perf_counter() - start
    ok = [r for r in results if r.ok]
    tokens = sum(r.output_tokens for r in ok)
    tpot = [(r.e2e - r.ttft) / (r.output_tokens - 1) for r in ok if r.output_tokens > 1]
    itl = [x for r in ok for x in r.itls]
    print(f"machine: {machine()}")
    print(f"model: {model}  requests: {len(work)} ({len(ok)} ok)  concurrency: {args.concurrency}  "
          f"duration: {elapsed:.2f} s")
    print(f"request throughput: {len(ok) / elapsed:.2f} req/s   output tokens/s: {tokens / elapsed:.1f}")
    print("| metric (ms) | mean | p50 | p99 |")
    print("|---|---|---|---|")
    for name, vals in (("TTFT", [r.ttft for r in ok]), ("TPOT", tpot), ("ITL", itl), ("E2E", [r.e2e for r in ok])):
        ms = [v * 1000 for v in vals]
        mean = statistics.fmean(ms) if ms else float("nan")
        print(f"| {name} | {mean:.1f} | {pct(ms, 50):.1f} | {pct(ms, 99):.1f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base-url", default="http://127.0.0.1:2242")
    ap.add_argument("--launch", action="store_true", help="start a server (built-in model unless --model)")
    ap.add_argument("--model", default=None)
    ap.add_argument("--num-requests", type=int, default=64)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--prompt-words", type=int, nargs=2, default=(4, 48))
    ap.add_argument("--output-len", type=int, nargs=2, default=(8, 128))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if not args.launch:
        asyncio.run(run(args))
        return
    from tests.server_process import RemoteServer

    with RemoteServer(["--model", args.model] if args.model else []) as server:
        args.base_url = server.url
        asyncio.run(run(args))


if __name__ == "__main__":
    main()
