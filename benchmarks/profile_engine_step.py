"""Profile of our engine's steps on benchmark_throughput's 64 mixed greedy requests (docs/benchmarks.md,
"What bounds the greedy batch"): a timed run, then the same run under the torch profiler (ops by self time) or
cProfile (Python functions by own time).

    OMP_NUM_THREADS=1 python benchmarks/profile_engine_step.py [--threads 1] [--mode torch|cprofile]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.benchmark_throughput import build_workloads  # noqa: E402
from aphrodite.engine.config import CacheConfig, ModelLoadConfig  # noqa: E402
from aphrodite.engine.llm_engine import LLMEngine, builtin_model_dir  # noqa: E402
from aphrodite.engine.sampling_params import SamplingParams  # noqa: E402
from aphrodite.engine.scheduler import SchedulerConfig  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--mode", choices=("torch", "cprofile"), default="torch")
    args = ap.parse_args()
    model = builtin_model_dir()
    work = build_workloads(model, ["mixed-greedy"], 64, 0, (8, 128), (8, 256), 0)["mixed-greedy"]
    engine = LLMEngine(ModelLoadConfig(model=str(model), device="cpu", dtype="float32", num_threads=args.threads),
                       CacheConfig(kv_cache_space_gb=4), SchedulerConfig(max_num_seqs=64))

    def run() -> None:
        params = [SamplingParams(temperature=0.0, top_p=1.0, max_tokens=r.max_tokens, ignore_eos=True) for r in work]
        engine.generate([r.prompt for r in work], params)

    run()  # warm-up
    start = time.perf_counter()
    run()
    seconds = time.perf_counter() - start
    print(f"{args.threads} thread(s): {seconds:.2f} s, {sum(r.max_tokens for r in work) / seconds:.0f} tok/s")
    if args.mode == "cprofile":
        prof = cProfile.Profile()
        prof.enable()
        run()
        prof.disable()
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(30)
        print(out.getvalue())
        return
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        run()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=30))


if __name__ == "__main__":
    main()
