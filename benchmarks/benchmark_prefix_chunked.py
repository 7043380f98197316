"""Prefix caching and chunked prefill: latency and throughput with each on and off, same run, same arrivals.

The engine runs in this process on the built-in model and is driven open-loop: requests arrive at seeded,
precomputed times whatever the engine is doing, so a long prefill that stalls the batch shows up as latency.
Two workloads:

* ``mixed``: a stream of short chats (32-token prompt, 64 tokens out) and a few long prompts (1000 tokens, 8
  out) among them; chunked prefill is meant to keep the short ones' inter-token latency down.
* ``shared``: chats that share one 400-token system prompt (+ 16-48 tokens of their own, 32 out); prefix caching
  is meant to skip the shared part.

For each workload and each of the four settings it prints TTFT p50/p99, TPOT p99 (per request: time after the
first token / tokens after the first), ITL p99 and max (gaps between two tokens of one short request), output
tokens/s over the wall time (bound by the arrivals) and over the time spent in ``step`` (the engine's
capacity), and the prefix-cache hit rate. Baseline: both off (the engine before prefix caching and chunked prefill).
``--mixed-step`` also times a padded mixed batch (one chunk + every decode row padded to it) against the two
batches run separately, the cost behind the scheduler's choice to alternate them.

    python benchmarks/benchmark_prefix_chunked.py --threads 1
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aphrodite.engine.config import CacheConfig, ModelLoadConfig  # noqa: E402
from aphrodite.engine.llm_engine import LLMEngine  # noqa: E402
from aphrodite.engine.sampling_params import SamplingParams  # noqa: E402
from aphrodite.engine.scheduler import SchedulerConfig  # noqa: E402
from benchmarks.common import machine  # noqa: E402


@dataclass
class Request:
    arrival: float
    prompt: list[int]
    max_tokens: int
    long: bool = False
    times: list[float] = field(default_factory=list)


def workload(name: str, seed: int, vocab: int) -> list[Request]:
    rng = random.Random(seed)

    def ids(n: int) -> list[int]:
        return [rng.randrange(3, vocab) for _ in range(n)]

    if name == "mixed":
        reqs = [Request(i * 0.12 + rng.random() * 0.05, ids(32), 64) for i in range(48)]
        reqs += [Request(0.5 + i * 1.0, ids(1000), 8, long=True) for i in range(5)]
    else:
        system = ids(400)
        reqs = [Request(i * 0.2, system + ids(rng.randint(16, 48)), 32) for i in range(40)]
    return sorted(reqs, key=lambda r: r.arrival)


def drive(engine: LLMEngine, reqs: list[Request]) -> tuple[float, float]:
    """Run the arrivals in real time; returns the wall time from the first arrival to the last token, and the
    time spent inside ``step`` (the engine's busy time)."""
    by_id = {f"r{i}": r for i, r in enumerate(reqs)}
    pending = list(by_id.items())
    start = time.perf_counter()
    busy = 0.0
    while pending or engine.has_unfinished_requests():
        now = time.perf_counter() - start
        while pending and pending[0][1].arrival <= now:
            rid, r = pending.pop(0)
            engine.add_request(rid, r.prompt, SamplingParams(temperature=0, max_tokens=r.max_tokens, ignore_eos=True))
        if not engine.has_unfinished_requests():
            time.sleep(max(0.0, pending[0][1].arrival - now))
            continue
        t0 = time.perf_counter()
        outs = engine.step()
        busy += time.perf_counter() - t0
        t = time.perf_counter() - start
        for out in outs:
            r = by_id[out.request_id]
            r.times.extend([t] * (len(out.outputs[0].token_ids) - len(r.times)))
    return time.perf_counter() - start, busy


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q / 100 * len(values)))] if values else float("nan")


def run_one(name: str, chunked: bool, prefix: bool, budget: int, seed: int) -> dict[str, float]:
    engine = LLMEngine(ModelLoadConfig(), CacheConfig(enable_prefix_caching=prefix),
                       SchedulerConfig(max_num_batched_tokens=budget, enable_chunked_prefill=chunked))
    engine.generate([[5] * 8], SamplingParams(max_tokens=2))  # warm-up
    engine.blocks.prefix_queries = engine.blocks.prefix_hits = 0
    reqs = workload(name, seed, engine.model.config.vocab_size)
    wall, busy = drive(engine, reqs)
    short = [r for r in reqs if not r.long]
    ttft = [(r.times[0] - r.arrival) * 1e3 for r in reqs]
    tpot = [(r.times[-1] - r.times[0]) / (len(r.times) - 1) * 1e3 for r in short]
    itl = [(b - a) * 1e3 for r in short for a, b in zip(r.times, r.times[1:]) if b > a]
    tokens = sum(len(r.times) for r in reqs)
    return {"ttft50": pct(ttft, 50), "ttft99": pct(ttft, 99), "tpot99": pct(tpot, 99), "itl99": pct(itl, 99),
            "itl_max": max(itl), "tok_s": tokens / wall, "busy_tok_s": tokens / busy,
            "hit": engine.blocks.prefix_hit_rate * 100,
            "long_ttft": max(((r.times[0] - r.arrival) * 1e3 for r in reqs if r.long), default=float("nan"))}


@torch.inference_mode()
def mixed_step_cost(chunk: int, decodes: int, context: int, reps: int = 5) -> tuple[float, float]:
    """ms of (a chunk batch + a decode batch run separately, one batch of both padded to the chunk's length),
    through the model runner's own prefill (with cached context) and decode paths."""
    from aphrodite.engine.sequence import Sequence

    engine = LLMEngine(ModelLoadConfig(), CacheConfig(enable_prefix_caching=False))
    runner = engine.runner

    def seq(n: int, computed: int) -> Sequence:
        s = Sequence(f"s{n}-{computed}", [7] * n, SamplingParams(), decoder=None)
        assert engine.blocks.allocate(s)
        s.num_computed_tokens = computed
        return s

    long = seq(context + chunk, context)
    rows = [seq(context, context - 1) for _ in range(decodes)]

    def best(fn) -> float:
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return min(times) * 1e3

    separate = best(lambda: runner._prefill([long], [chunk])) + best(lambda: runner._decode(rows))
    mixed = best(lambda: runner._prefill([long] + rows, [chunk] + [1] * decodes))
    return separate, mixed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--workloads", nargs="+", default=["mixed", "shared"])
    ap.add_argument("--budget", type=int, default=512, help="--max-num-batched-tokens with chunked prefill")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--mixed-step", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"machine: {machine()}")
    for name in args.workloads:
        print(f"\nworkload {name} (budget {args.budget} tokens with chunked prefill)")
        print("| chunked | prefix cache | TTFT p50 ms | TTFT p99 ms | long TTFT max ms | TPOT p99 ms | ITL p99 ms "
              "| ITL max ms | out tok/s | tok/s busy | hit % |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for chunked, prefix in ((False, False), (True, False), (False, True), (True, True)):
            m = run_one(name, chunked, prefix, args.budget, args.seed)
            print(f"| {'on' if chunked else 'off'} | {'on' if prefix else 'off'} | {m['ttft50']:.0f} | "
                  f"{m['ttft99']:.0f} | {m['long_ttft']:.0f} | {m['tpot99']:.1f} | {m['itl99']:.1f} | "
                  f"{m['itl_max']:.0f} | {m['tok_s']:.0f} | {m['busy_tok_s']:.0f} | {m['hit']:.0f} |", flush=True)
    if args.mixed_step:
        print("\n| chunk (after 256 cached tokens) | decode rows (256-token context) | separate batches ms "
              "| one padded mixed batch ms |")
        print("|---|---|---|---|")
        for decodes in (4, 16):
            sep, mixed = mixed_step_cost(args.budget, decodes, 256)
            print(f"| {args.budget} | {decodes} | {sep:.1f} | {mixed:.1f} |")


if __name__ == "__main__":
    main()
