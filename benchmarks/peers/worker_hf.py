"""Worker: transformers, either ``generate`` over static batches or ``generate_batch``'s continuous batching.

``--variant generate``: batches of ``--batch`` requests, prompts left-padded, each batch decoding until its
longest output is done (only each request's own tokens count). ``--variant generate-batch``: transformers'
continuous-batching manager over its paged cache, each request with its own ``max_new_tokens``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import worker  # noqa: E402
from workload import Request, load  # noqa: E402


def check() -> None:
    import transformers  # noqa: F401


def _static(model, batch: int):
    import torch

    def run(reqs):
        for i in range(0, len(reqs), batch):
            chunk = reqs[i:i + batch]
            longest = max(len(r.prompt) for r in chunk)
            ids = torch.tensor([[0] * (longest - len(r.prompt)) + r.prompt for r in chunk])
            mask = torch.tensor([[0] * (longest - len(r.prompt)) + [1] * len(r.prompt) for r in chunk])
            new = max(r.max_tokens for r in chunk)
            sampled = chunk[0].temperature > 0
            kw = {"do_sample": True, "temperature": chunk[0].temperature, "top_p": chunk[0].top_p} if sampled \
                else {"do_sample": False}
            with torch.inference_mode():
                out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new, min_new_tokens=new,
                                     pad_token_id=0, **kw)
            assert out.shape[1] == longest + new
        return [r.max_tokens for r in reqs]

    return run


def _continuous(model, batch: int, longest: int):
    from transformers import GenerationConfig
    from transformers.generation.configuration_utils import ContinuousBatchingConfig

    # an explicit cache (auto-sizing takes most of the host's memory on the CPU): every request fits at once
    cb = ContinuousBatchingConfig(page_size=256, num_blocks=batch * -(-longest // 256) + 4, max_batch_tokens=2048,
                                  max_requests_per_batch=batch)
    managers = {}  # one running manager per sampling setting; stopping one takes seconds, so none is timed
    count = iter(range(10**9))

    def manager_for(temperature: float, top_p: float):
        key = (temperature, top_p)
        if key not in managers:
            sampled = temperature > 0
            cfg = GenerationConfig(do_sample=sampled, temperature=temperature if sampled else None,
                                   top_p=top_p if sampled else None, max_new_tokens=longest, eos_token_id=-1,
                                   pad_token_id=0)
            managers[key] = model.init_continuous_batching(generation_config=cfg, continuous_batching_config=cb)
            managers[key].start()
        return managers[key]

    def run(reqs):
        manager = manager_for(reqs[0].temperature, reqs[0].top_p)
        ids = [manager.add_request(r.prompt, request_id=f"r{next(count)}", max_new_tokens=r.max_tokens,
                                   eos_token_id=-1) for r in reqs]
        produced = {}
        while len(produced) < len(reqs):
            res = manager.get_result(timeout=5)
            if res is None:
                if not manager.is_running():
                    raise RuntimeError("transformers' continuous-batching thread stopped")
            elif res.is_finished():
                produced[res.request_id] = len(res.generated_tokens)
        return [produced[i] for i in ids]

    return run


def prepare(args):
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(args.threads)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
    if args.variant == "generate-batch":
        reqs = [r for w in load(args.workloads).values() for r in w]
        run = _continuous(model, args.batch, max(len(r.prompt) + r.max_tokens for r in reqs))
        for setting in {(r.temperature, r.top_p) for r in reqs}:  # start and warm one manager per setting
            run([Request(reqs[0].prompt, 2, *setting)])
    else:
        run = _static(model, args.batch)
    return run, f"transformers {transformers.__version__}, torch {torch.__version__}"


if __name__ == "__main__":
    worker.main(prepare, check)
