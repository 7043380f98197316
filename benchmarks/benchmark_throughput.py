"""Offline throughput: our continuous-batching engine against transformers' ``generate`` with static batches.

Both run the same checkpoint, prompts and output lengths (EOS ignored, so each request produces exactly its
length). transformers pads every batch to its longest prompt and keeps decoding until its longest output is
done; only each request's own tokens count as output. Prints one table and the ratio.

    python benchmarks/benchmark_throughput.py                   # built-in model if present, 64 requests
    python benchmarks/benchmark_throughput.py --random-1b       # 1B-shaped random Llama (for a GPU)
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine, random_llama  # noqa: E402
from aphrodite.engine.config import CacheConfig, ModelLoadConfig  # noqa: E402
from aphrodite.engine.llm_engine import LLMEngine, builtin_model_dir  # noqa: E402
from aphrodite.engine.sampling_params import SamplingParams  # noqa: E402
from aphrodite.engine.scheduler import SchedulerConfig  # noqa: E402


WORDS = ("the model server learns from every request and answers questions about cats dogs rivers numbers "
         "colours cities music books science history weather what is why how does a an of to in").split()


def workload(n: int, tokenizer, seed: int, prompt_range: tuple[int, int],
             output_range: tuple[int, int]) -> list[tuple[list[int], int]]:
    """Seeded prompts of English words cut to a drawn token length, with a drawn output length each."""
    rng = random.Random(seed)
    work = []
    for _ in range(n):
        length = rng.randint(*prompt_range)
        ids: list[int] = []
        while len(ids) < length:
            ids += tokenizer.encode(" ".join(rng.choice(WORDS) for _ in range(16)), add_special_tokens=False)
        work.append((ids[:length], rng.randint(*output_range)))
    return work


def run_ours(model_dir: Path, work, batch: int, device: str, dtype: str) -> float:
    engine = LLMEngine(ModelLoadConfig(model=str(model_dir), device=device, dtype=dtype),
                       CacheConfig(kv_cache_space_gb=4), SchedulerConfig(max_num_seqs=batch))
    engine.generate([work[0][0]], SamplingParams(max_tokens=4, ignore_eos=True))  # warm-up
    params = [SamplingParams(temperature=0.8, top_p=0.95, max_tokens=n, ignore_eos=True) for _, n in work]
    start = time.perf_counter()
    outs = engine.generate([p for p, _ in work], params)
    elapsed = time.perf_counter() - start
    assert [len(o.outputs[0].token_ids) for o in outs] == [n for _, n in work]
    return elapsed


def run_transformers(model_dir: Path, work, batch: int, device: str, dtype: str) -> float:
    from transformers import AutoModelForCausalLM

    torch_dtype = {"auto": "auto", "float32": torch.float32, "bfloat16": torch.bfloat16,
                   "float16": torch.float16}[dtype]
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch_dtype).to(device).eval()
    pad = 0
    model.generation_config.pad_token_id = pad

    def generate(chunk) -> None:
        longest = max(len(p) for p, _ in chunk)
        ids = torch.tensor([[pad] * (longest - len(p)) + p for p, _ in chunk], device=device)
        mask = torch.tensor([[0] * (longest - len(p)) + [1] * len(p) for p, _ in chunk], device=device)
        new = max(n for _, n in chunk)
        with torch.inference_mode():
            out = model.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=0.8, top_p=0.95,
                                 max_new_tokens=new, min_new_tokens=new)
        assert out.shape[1] == longest + new

    generate(work[:1])  # warm-up
    start = time.perf_counter()
    for i in range(0, len(work), batch):
        generate(work[i:i + batch])
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="checkpoint dir (default: the built-in model)")
    ap.add_argument("--random-1b", action="store_true", help="use a random Llama of ~1B parameters")
    ap.add_argument("--num-requests", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=64, help="max_num_seqs for us, static batch for transformers")
    ap.add_argument("--prompt-len", type=int, nargs=2, default=(8, 128))
    ap.add_argument("--output-len", type=int, nargs=2, default=(8, 256))
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads for both (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.random_1b:
        model_dir = random_llama(hidden=2048, layers=16, heads=32, kv_heads=8, inter=8192, vocab=32000)
    else:
        model_dir = Path(args.model) if args.model else builtin_model_dir()
    from aphrodite.modeling.tokenizer import Tokenizer
    work = workload(args.num_requests, Tokenizer(model_dir), args.seed, tuple(args.prompt_len),
                    tuple(args.output_len))
    out_tokens = sum(n for _, n in work)
    ours = run_ours(model_dir, work, args.batch_size, args.device, args.dtype)
    theirs = run_transformers(model_dir, work, args.batch_size, args.device, args.dtype)
    print(f"machine: {machine()}")
    print(f"model: {model_dir}  requests: {len(work)}  prompt len {args.prompt_len}  output len {args.output_len}"
          f"  output tokens: {out_tokens}")
    print("| engine | seconds | requests/s | output tokens/s |")
    print("|---|---|---|---|")
    for name, secs in (("aphrodite (continuous batching)", ours), ("transformers generate (static batches)", theirs)):
        print(f"| {name} | {secs:.2f} | {len(work) / secs:.2f} | {out_tokens / secs:.1f} |")
    print(f"\nthroughput ratio aphrodite / transformers: {theirs / ours:.2f}x")


if __name__ == "__main__":
    main()
