"""Worker: our engine (continuous batching over the paged KV cache)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import worker  # noqa: E402


def check() -> None:
    import aphrodite.engine.llm_engine  # noqa: F401


def prepare(args):
    import torch

    import aphrodite
    from aphrodite.engine.config import CacheConfig, ModelLoadConfig
    from aphrodite.engine.llm_engine import LLMEngine
    from aphrodite.engine.sampling_params import SamplingParams
    from aphrodite.engine.scheduler import SchedulerConfig

    # --threads 0: the engine's own default (free cores at start); else exactly that many
    engine = LLMEngine(ModelLoadConfig(model=args.model, device="cpu", dtype="float32",
                                       num_threads=args.threads or None),
                       CacheConfig(kv_cache_space_gb=4), SchedulerConfig(max_num_seqs=args.batch))
    args.threads = engine.num_threads  # reported back: the count it ran with

    def run(reqs):
        params = [SamplingParams(temperature=r.temperature, top_p=r.top_p, max_tokens=r.max_tokens, ignore_eos=True)
                  for r in reqs]
        outs = engine.generate([r.prompt for r in reqs], params)
        return [len(o.outputs[0].token_ids) for o in outs]

    return run, f"aphrodite {aphrodite.__version__}, torch {torch.__version__}"


if __name__ == "__main__":
    worker.main(prepare, check)
