"""Throughput on a busy host: the engine quiet, then with one busy-loop process per other core.

Each configuration runs the same offline workload (mixed prompts, sampled; EOS ignored) in its own process,
first on the quiet machine, then while ``cores - 1`` bounded busy loops run (each a python ``while`` loop that
stops by itself after ``--busy-seconds`` and is killed when the run ends). Configurations:

  old default     torch's default threads (one per core) and OpenMP's default (active) wait policy
  2 threads, passive   one thread per core, OMP_WAIT_POLICY=PASSIVE
  new default     the engine's default: threads from the cores free at start, OMP_WAIT_POLICY=PASSIVE
                  (what the ``aphrodite`` command sets before torch loads)
  short spin      libgomp's GOMP_SPINCOUNT=20000: waiting threads spin briefly, then sleep

Then the reservoir, the same way (each configuration in its own process, quiet then busy): a batched
``Reservoir.run`` (N = 256, float32) of 64 sequences x 1,000 steps (8.4 MFLOP per step: below the reservoir's
threshold for a second thread) and of 256 sequences x 250 steps (33.6 MFLOP per step: above it), each at
2 fixed threads with OpenMP's default wait (the old default) and at the reservoir's default (threads chosen per
run, ``aphrodite/reservoir/threads.py``). Best of up to 3 runs (fewer when one takes over 10 s).

Prints seconds, output tokens/s (engine) and busy/quiet per configuration. Goal: busy >= 0.4x quiet.

    python benchmarks/benchmark_busy_host.py [--config 0 2] [--reservoir-config 0 1 2 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
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

RESERVOIR_CONFIGS = {  # name -> (sequences, steps, threads (None: the reservoir's choice))
    "64 x 1000 steps, 2 threads (old default)": (64, 1000, 2),
    "64 x 1000 steps, default (chosen per run)": (64, 1000, None),
    "256 x 250 steps, 2 threads (old default)": (256, 250, 2),
    "256 x 250 steps, default (chosen per run)": (256, 250, None),
}
UNITS = 256


def reservoir_worker(batch: int, steps: int, threads: int | None) -> None:
    """In its own process: time ``Reservoir.run`` on a (batch, steps, 1) input; print JSON."""
    import torch

    from aphrodite.reservoir import Reservoir

    res = Reservoir(UNITS, sr=0.9, lr=0.3, seed=0, input_dim=1, threads=threads)
    u = torch.randn(batch, steps, 1, generator=torch.Generator().manual_seed(0))
    times, used = [], []
    for _ in range(3):
        chosen = res.run_threads(batch, steps)  # what the run below chooses (its meter reads within 50 ms agree)
        used.append(f"{chosen.drive}/{chosen.step}")
        start = time.perf_counter()
        res.run(u, x0=torch.zeros(UNITS))
        times.append(time.perf_counter() - start)
        if sum(times) > 10:
            break
    print(json.dumps({"seconds": min(times), "runs": len(times), "threads": used}))


def run_reservoir(batch: int, steps: int, threads: int | None, timeout: float) -> dict | str:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "GOMP_SPINCOUNT")}
    cmd = [sys.executable, __file__, "--reservoir-worker", str(batch), str(steps), str(threads or 0)]
    try:
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"timed out after {timeout:.0f} s"
    if out.returncode != 0:
        return f"failed: {out.stderr.strip().splitlines()[-1:]}"
    return json.loads(out.stdout.strip().splitlines()[-1])


def busy_loops(n: int, seconds: float) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", BUSY_LOOP, str(seconds)]) for _ in range(n)]


def quiet_then_busy(run, neighbours: int, seconds: float) -> tuple:
    """``run()`` on the quiet machine, then again with ``neighbours`` busy loops running (stopped afterwards)."""
    quiet = run()
    loops = busy_loops(neighbours, seconds)
    try:
        busy = run()
    finally:
        for p in loops:
            p.kill()
            p.wait()
    return quiet, busy


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
    ap.add_argument("--reservoir-config", nargs="*", type=int, default=None,
                    help="run only these reservoir configurations (0-based indices; none: skip the reservoir)")
    ap.add_argument("--reservoir-worker", nargs=3, type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.reservoir_worker:
        batch, steps, threads = args.reservoir_worker
        reservoir_worker(batch, steps, threads or None)
        return
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
        reservoir_rows = []
        for i, (name, (batch, steps, threads)) in enumerate(RESERVOIR_CONFIGS.items()):
            if args.reservoir_config is not None and i not in args.reservoir_config:
                continue
            quiet, busy = quiet_then_busy(lambda: run_reservoir(batch, steps, threads, args.timeout), cores - 1,
                                          args.busy_seconds)
            reservoir_rows.append((name, quiet, busy))
            print(f"done: reservoir {name}", file=sys.stderr, flush=True)
        for name, (threads, policy) in chosen:
            threads = cores if threads is None else threads
            quiet, busy = quiet_then_busy(lambda: run_config(threads, policy, path, model, args.timeout), cores - 1,
                                          args.busy_seconds)
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

    if reservoir_rows:
        print(f"\nreservoir: Reservoir({UNITS}, sr=0.9, lr=0.3), float32, input (B, T, 1); threads per run as chosen")
        print("| configuration | threads (drive/step) quiet ; busy | quiet s | busy s | busy / quiet |")
        print("|---|---|---|---|---|")
        for name, quiet, busy in reservoir_rows:
            def rcell(r) -> str:
                return r if isinstance(r, str) else f"{r['seconds']:.3f} (best of {r['runs']})"
            ok = not isinstance(quiet, str) and not isinstance(busy, str)
            used = f"{', '.join(sorted(set(quiet['threads'])))} ; {', '.join(sorted(set(busy['threads'])))}" if ok else "-"
            ratio = f"{quiet['seconds'] / busy['seconds']:.2f}x" if ok else "-"
            print(f"| {name} | {used} | {rcell(quiet)} | {rcell(busy)} | {ratio} |")


if __name__ == "__main__":
    main()
