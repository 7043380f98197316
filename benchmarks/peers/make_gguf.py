"""Converts a checkpoint to an f32 GGUF for the llama.cpp peer, with llama.cpp's own converter.

    python benchmarks/peers/make_gguf.py LLAMA_CPP_DIR OUT.gguf [--model DIR]

LLAMA_CPP_DIR is a llama.cpp source tree, e.g. ``vendor/llama.cpp`` of the llama-cpp-python 0.3.36 sdist. The
converter refuses a BPE tokenizer whose pre-tokenizer it does not know by hash; ours is a byte-level BPE with
GPT-2's split regex (tokenizer.json: ByteLevel, use_regex), so it is registered as llama.cpp's "gpt-2"
pre-tokenizer. The benchmark feeds token ids, so the text tokenizer does not affect the numbers either way.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def convert(llama_cpp_dir: Path, model: Path, out: Path) -> Path:
    sys.path[:0] = [str(llama_cpp_dir / "gguf-py"), str(llama_cpp_dir)]
    import convert_hf_to_gguf
    from conversion import base

    def no_such_vocab(self, *args, **kwargs):
        raise FileNotFoundError("not a SentencePiece / llama-hf vocabulary")

    # the Llama converter tries SentencePiece, then llama-hf, then the GPT-2 BPE path that fits ours
    base.TextModel._set_vocab_sentencepiece = no_such_vocab
    base.TextModel._set_vocab_llama_hf = no_such_vocab
    base.TextModel.get_vocab_base_pre = lambda self, tokenizer: "gpt-2"
    sys.argv = ["convert_hf_to_gguf.py", str(model), "--outtype", "f32", "--outfile", str(out)]
    convert_hf_to_gguf.main()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("llama_cpp_dir", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--model", type=Path, default=None, help="checkpoint dir (default: the built-in model)")
    args = ap.parse_args()
    model = args.model or Path(__file__).resolve().parents[2] / "aphrodite/modeling/builtin/checkpoint"
    convert(args.llama_cpp_dir.resolve(), model.resolve(), args.out.resolve())


if __name__ == "__main__":
    main()
