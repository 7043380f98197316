"""Several resident weight versions in one batch: what does decoding cost with 1, 2, 4, 8 delta sets?

One engine (the built-in model unless ``--model``), ``--batch`` sequences decoding together. Each scenario
pins the batch's sequences round-robin to ``n`` versions (``n`` = 0: no adapter at all, the baseline; 1: every
row on one slot; "1 before": the same delta served the way one version was served before multi-adapter batches
(the layers' own ``set_lora`` delta, no slots: the code path of that engine); 2, 4, 8: rows on different
slots, the grouped path, once per CPU strategy of ``LoRACapableLinear.cpu_grouping``: ``stacked``, every used
slot's A and B in one matmul each with each row masked to its own rank columns, and ``segmented``, two
matmuls per slot group), each version a random rank-``--rank`` delta on every attention and MLP projection
(what the learner trains). Only decode steps are timed (prefill excluded); the scenarios alternate in
``--rounds`` rounds and the median step time of each is reported, as decode tokens/s and relative to one set
(goal: 4 sets <= 1.3x the time of one). Then the swap stall (``LLMEngine.swap_seconds``) of ``--swaps``
promotions with ``--batch`` sequences running, the deltas staged into a free slot on the submitting thread.

    python benchmarks/benchmark_multi_adapter.py
    python benchmarks/benchmark_multi_adapter.py --sets 0 1     # runs on engines without multi-adapter batches
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine  # noqa: E402
from aphrodite.engine.config import ModelLoadConfig  # noqa: E402
from aphrodite.engine.llm_engine import LLMEngine  # noqa: E402
from aphrodite.engine.sampling_params import SamplingParams  # noqa: E402
from aphrodite.engine.weights import LoRADelta  # noqa: E402


def random_version(engine: LLMEngine, rank: int, seed: int) -> dict[str, LoRADelta]:
    g = torch.Generator().manual_seed(seed)
    return {name: LoRADelta(torch.randn(rank, layer.in_features, generator=g) * 0.01,
                            torch.randn(layer.out_features, rank, generator=g) * 0.01, scale=2.0)
            for name, layer in engine.model.lora_targets().items() if name.startswith("layers.")}


def serve(engine: LLMEngine, version: int) -> None:
    fut = engine.rollback_weights(version)
    while not fut.done():
        engine.step()


def decode_step_times(engine: LLMEngine, versions: list[int], batch: int, tokens: int) -> list[float]:
    """Admit ``batch`` sequences pinned round-robin to ``versions``, then time each decode step."""
    prompt = engine.tokenizer.encode("The model learns from every request about rivers and music")
    params = SamplingParams(temperature=0, max_tokens=tokens, ignore_eos=True)
    for i in range(batch):
        serve(engine, versions[i % len(versions)])  # the step that swaps also admits the previous request
        engine.add_request(f"r{i}", prompt, params)
    engine.step()  # admits the last one
    times = []
    while engine.has_unfinished_requests():
        t0 = time.perf_counter()
        engine.step()
        times.append(time.perf_counter() - t0)
    return times[1:-1]  # the first may still prefill; the last finishes sequences


class SingleDeltaAsBefore:
    """Serve version 1 through ``set_lora`` with the slots unbound: the one-delta path of the earlier engine."""

    def __init__(self, engine: LLMEngine) -> None:
        self.engine, self.layers = engine, engine.model.lora_targets()

    def __enter__(self) -> None:
        padded = self.engine.weights._history[1].padded
        for name, layer in self.layers.items():
            self.batch = layer.adapter_batch
            layer.adapter_batch = None
            if name in padded:
                layer.set_lora(*padded[name], 1.0)

    def __exit__(self, *exc) -> None:
        for layer in self.layers.values():
            layer.lora_a = layer.lora_b = None
            layer.adapter_batch = self.batch


def swap_stall(engine: LLMEngine, batch: int, swaps: int, rank: int, first: int) -> list[float]:
    prompt = engine.tokenizer.encode("The capital of France is")
    for i in range(batch):
        engine.add_request(f"s{i}", prompt, SamplingParams(max_tokens=3 * swaps + 8, ignore_eos=True))
    engine.step()
    deltas = [random_version(engine, rank, 100 + i) for i in range(swaps)]
    before = len(engine.swap_seconds)
    for i, d in enumerate(deltas):
        engine.submit_weights(first + i, d)  # staged here, on this thread; the next safe point swaps
        engine.step()
        engine.step()
    while engine.has_unfinished_requests():
        engine.step()
    return list(engine.swap_seconds)[before:]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="checkpoint directory (default: the built-in model)")
    ap.add_argument("--sets", type=int, nargs="+", default=[0, 1, 2, 4, 8], help="resident delta sets per scenario")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=48, help="decode steps per scenario and round")
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--swaps", type=int, default=40)
    ap.add_argument("--groupings", nargs="+", default=["stacked", "segmented"],
                    help="CPU strategies for rows on different slots (LoRACapableLinear.cpu_grouping)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: the engine's share on a busy host)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    most = max(args.sets)
    extra = {"max_resident_versions": max(1, most)} if "max_resident_versions" in ModelLoadConfig.__dataclass_fields__ \
        else {}
    if not extra and most > 1:
        raise SystemExit("this engine holds one delta set at a time: run with --sets 0 1")
    engine = LLMEngine(ModelLoadConfig(model=args.model, **extra))
    for v in range(1, most + 1):
        engine.submit_weights(v, random_version(engine, args.rank, v), serve=False)
        engine.step()
    decode_step_times(engine, [1], args.batch, 8)  # warm-up
    from aphrodite.modeling.layers.linear import LoRACapableLinear
    kinds = {0: ["-"], 1: ["before", "-"]}
    scenarios = [(n, g) for n in args.sets for g in kinds.get(n, args.groupings)]
    has_slots = hasattr(engine.model.lm_head, "adapter_batch")
    scenarios = [sc for sc in scenarios if has_slots or sc[1] != "before"]
    steps: dict[tuple[int, str], list[float]] = {sc: [] for sc in scenarios}
    for _ in range(args.rounds):
        for n, grouping in scenarios:
            versions = list(range(1, n + 1)) or [0]
            if grouping == "before":  # version 0 in the engine's books, version 1's delta in every layer
                with SingleDeltaAsBefore(engine):
                    steps[(n, grouping)] += decode_step_times(engine, [0], args.batch, args.tokens)
                continue
            if grouping != "-":
                LoRACapableLinear.cpu_grouping = grouping
            steps[(n, grouping)] += decode_step_times(engine, versions, args.batch, args.tokens)
    print(f"# benchmark_multi_adapter: {machine()}")
    print(f"# batch {args.batch} sequences, rank {args.rank} on every layer projection, {args.rounds} rounds x "
          f"{args.tokens} decode steps per scenario; median decode step")
    one = statistics.median(steps[(1, "-")]) if (1, "-") in steps else None
    print(f"{'delta sets':>10} | {'grouping':>9} | {'step ms':>8} | {'p90 ms':>7} | {'tokens/s':>8} | {'x one set':>9}")
    for (n, grouping), times in steps.items():
        med = statistics.median(times)
        p90 = sorted(times)[int(0.9 * len(times))]
        rel = f"{med / one:.2f}x" if one else "-"
        print(f"{n if n else 'none':>10} | {grouping:>9} | {1e3 * med:8.3f} | {1e3 * p90:7.3f} | "
              f"{args.batch / med:8.0f} | {rel:>9}")
    stalls = sorted(swap_stall(engine, args.batch, args.swaps, args.rank, most + 1))
    print(f"# swap stall, {len(stalls)} promotions with {args.batch} running sequences: p50 "
          f"{1e3 * stalls[len(stalls) // 2]:.3f} ms, p99 {1e3 * stalls[int(0.99 * (len(stalls) - 1))]:.3f} ms, "
          f"max {1e3 * stalls[-1]:.3f} ms")


if __name__ == "__main__":
    main()
