"""The part every peer's worker process shares: arguments, warm-up, timing, and one JSON line of result.

Runs under the peer's own python (its own virtual environment), so it uses the standard library only. A peer
whose library does not import exits with ``{"status": "not installed"}``, which the table shows as such.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Callable

from workload import Request, load

Runner = Callable[[list[Request]], list[int]]
"""Runs a whole workload and returns the number of tokens produced per request."""


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workloads", required=True, help="JSON file written by workload.save")
    ap.add_argument("--model", required=True, help="Hugging Face-layout checkpoint directory")
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--batch", type=int, default=64, help="most requests decoded together")
    ap.add_argument("--variant", default="", help="a peer-specific mode (hf: generate or generate-batch)")
    ap.add_argument("--gguf", default="", help="llama.cpp: the GGUF file")
    return ap.parse_args()


def emit(result: dict) -> None:
    print("PEER-RESULT " + json.dumps(result), flush=True)


def main(prepare: Callable[[argparse.Namespace], tuple[Runner, str]], import_check: Callable[[], None]) -> None:
    """``import_check`` imports the peer's library (ImportError = not installed); ``prepare`` loads the model and
    returns the runner and the library's version."""
    args = parse_args()
    try:
        import_check()
    except ImportError as e:
        emit({"status": "not installed", "detail": f"{type(e).__name__}: {e}"[:300]})
        return
    runner, version = prepare(args)
    workloads = load(args.workloads)
    first = next(iter(workloads.values()))
    runner([Request(first[0].prompt, 4, 0.0, 1.0)])  # warm-up: first-call allocations, kernel selection
    seconds: dict[str, float] = {}
    for name, reqs in workloads.items():
        start = time.perf_counter()
        produced = runner(reqs)
        seconds[name] = time.perf_counter() - start
        want = [r.max_tokens for r in reqs]
        if produced != want:
            bad = sum(p != w for p, w in zip(produced, want))
            emit({"status": "failed", "detail": f"{name}: {bad} requests produced the wrong number of tokens"})
            sys.exit(1)
    emit({"status": "ok", "version": version, "seconds": seconds, "threads": args.threads,
          "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(unset)")})
    sys.stdout.flush()
    os._exit(0)  # peers' background threads and processes (generate_batch's manager, vLLM's engine) end with it
