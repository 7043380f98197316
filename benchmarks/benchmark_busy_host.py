"""Throughput on a busy host: the engine quiet, then with one busy-loop process per other core.

Each configuration runs the same offline workload (mixed prompts, sampled; EOS ignored) in its own process,
first on the quiet machine, then while ``cores - 1`` bounded busy loops run (each a python ``while`` loop that
stops by itself after ``--busy-seconds`` and is killed when the run ends). Configurations:

  old default     torch's default threads (one per core) and OpenMP's default (active) wait policy
  2 threads, passive   one thread per core, OMP_WAIT_POLICY=PASSIVE
  new default     the engine's default: threads from the cores free at start, OMP_WAIT_POLICY=PASSIVE
                  (what the ``aphrodite`` command sets before torch loads)
  short spin      libgomp's GOMP_SPINCOUNT=20000: waiting threads spin briefly, then sleep

Prints seconds, output tokens/s and busy/quiet per configuration. Goal: busy >= 0.4x quiet.

    python benchmarks/benchmark_busy_host.py
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine  # noqa: E402
from benchmarks.peers import workload as wl  # noqa: E402
from benchmarks.peers.launch import run_peer  # noqa: E402
from aphrodite.engine.llm_engine import builtin_model_dir  # noqa: E402

BUSY_LOOP = "import sys, time\nend = time.time() + float(sys.argv[1])\nwhile time.time() < end:\n    pass\n"

CONFIGS = {  # name -> (threads for the worker (None: one per core, 0: engine default), OpenMP wait settings)
    "old default (2 threads, active wait)": (None, {}),
    "2 threads, passive wait": (None, {"OMP_WAIT_POLICY": "PASSIVE"}),
    "new default (free cores, passive wait)": (0, {"OMP_WAIT_POLICY": "PASSIVE"}),
    "2 threads, short spin (GOMP_SPINCOUNT=20000)": (None, {"GOMP_SPINCOUNT": "20000"}),
    "free cores, short spin (GOMP_SPINCOUNT=20000)": (0, {"GOMP_SPINCOUNT": "20000"}),
}


def busy_loops(n: int, seconds: float) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", BUSY_LOOP, str(seconds)]) for _ in range(n)]


def run_config(threads: int, wait: dict[str, str], path: Path, model: Path, timeout: float):
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "GOMP_SPINCOUNT")}
    env.update(wait)
    return run_peer("aphrodite", path, model, threads, 64, env=env, timeout=timeout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--num-requests", type=int, default=32)
    ap.add_argument("--output-len", type=int, nargs=2, default=(8, 128))
    ap.add_argument("--busy-seconds", type=float, default=150, help="each busy loop stops by itself after this")
    ap.add_argument("--timeout", type=float, default=150, help="seconds one configuration's process may take")
    ap.add_argument("--config", nargs="*", type=int, default=None,
                    help="run only these configurations (0-based indices into the list above)")
    args = ap.parse_args()
    cores = len(os.sched_getaffinity(0))
    model = builtin_model_dir()
    from aphrodite.modeling.tokenizer import Tokenizer

    tok = Tokenizer(model)
    work = {"mixed-sampled": wl.mixed(lambda t: tok.encode(t, add_special_tokens=False), args.num_requests, 0,
                                      (8, 128), tuple(args.output_len), wl.SAMPLED)}
    tokens = sum(r.max_tokens for r in work["mixed-sampled"])
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-busy-") as tmp:
        path = Path(tmp) / "workloads.json"
        wl.save(work, path)
        chosen = [c for i, c in enumerate(CONFIGS.items()) if args.config is None or i in args.config]
        for name, (threads, policy) in chosen:
            threads = cores if threads is None else threads
            quiet = run_config(threads, policy, path, model, args.timeout)
            loops = busy_loops(cores - 1, args.busy_seconds)
            try:
                busy = run_config(threads, policy, path, model, args.timeout)
            finally:
                for p in loops:
                    p.kill()
                    p.wait()
            rows.append((name, quiet, busy))
            print(f"done: {name}", file=sys.stderr, flush=True)
    print(f"machine: {machine()}")
    print(f"workload: {args.num_requests} requests, prompts 8-128, outputs {args.output_len}, sampled, float32; "
          f"{tokens} output tokens; busy = {cores - 1} busy-loop process(es) on {cores} cores")
    print("| configuration | threads quiet / busy | quiet s (tok/s) | busy s (tok/s) | busy / quiet |")
    print("|---|---|---|---|---|")
    for name, quiet, busy in rows:
        def cell(r) -> str:
            if r.status != "ok":
                return f"{r.status}: {r.detail[:60]}"
            s = r.seconds["mixed-sampled"]
            return f"{s:.2f} ({tokens / s:.0f})"
        ratio = (f"{quiet.seconds['mixed-sampled'] / busy.seconds['mixed-sampled']:.2f}x"
                 if quiet.status == busy.status == "ok" else "-")
        print(f"| {name} | {quiet.threads} / {busy.threads} | {cell(quiet)} | {cell(busy)} | {ratio} |")


if __name__ == "__main__":
    main()
