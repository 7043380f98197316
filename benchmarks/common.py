"""Shared bits of the benchmark scripts: machine description and a random checkpoint maker."""

from __future__ import annotations

import os
import platform
import tempfile
from pathlib import Path

import torch


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{os.cpu_count()} cores {cpu}, {gpu}, torch {torch.__version__} ({torch.get_num_threads()} threads)"


def random_llama(hidden: int, layers: int, heads: int, kv_heads: int, inter: int, vocab: int,
                 max_pos: int = 2048, seed: int = 0, out: Path | None = None) -> Path:
    """A random Llama checkpoint saved by transformers, with the tiny test tokenizer's files beside it."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from tests.tiny_checkpoints import make_tokenizer

    out = out or Path(tempfile.mkdtemp(prefix="bench-llama-"))
    make_tokenizer(out)
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                      num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=max_pos)
    LlamaForCausalLM(cfg).save_pretrained(out, safe_serialization=True)
    return out
