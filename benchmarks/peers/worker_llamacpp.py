"""Worker: llama.cpp through ``llama-cpp-python``, on an f32 GGUF of the same checkpoint (``make_gguf.py``).

llama-cpp-python's ``Llama`` holds one sequence, so requests run one after another (single-stream decoding is
what this peer is compared on). Every request starts from an empty KV cache (no prefix reuse between requests).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import worker  # noqa: E402


def check() -> None:
    import llama_cpp  # noqa: F401


def prepare(args):
    import llama_cpp

    if not args.gguf or not Path(args.gguf).exists():
        raise SystemExit(f"no GGUF at {args.gguf!r}: make one with benchmarks/peers/make_gguf.py")
    llm = llama_cpp.Llama(model_path=args.gguf, n_ctx=1024, n_batch=512, n_threads=args.threads,
                          n_threads_batch=args.threads, verbose=False, seed=0)

    def one(req) -> int:
        llm.reset()
        sampled = req.temperature > 0
        gen = llm.generate(req.prompt, temp=req.temperature if sampled else 0.0, top_p=req.top_p, top_k=0,
                           min_p=0.0, repeat_penalty=1.0, reset=True)
        n = 0
        for _ in gen:  # generate() never stops by itself (EOS is not checked there): EOS is ignored
            n += 1
            if n == req.max_tokens:
                break
        return n

    def run(reqs):
        return [one(r) for r in reqs]

    return run, f"llama-cpp-python {llama_cpp.__version__}"


if __name__ == "__main__":
    worker.main(prepare, check)
