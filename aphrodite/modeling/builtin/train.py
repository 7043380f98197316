"""Train the built-in chat model from scratch on CPU and write it in Hugging Face layout.

    python -m aphrodite.modeling.builtin.train --out aphrodite/modeling/builtin/checkpoint

Everything follows from ``--seed``: the corpus, the tokenizer, the initial weights and the batches.
The defaults are exactly those that produced the shipped checkpoint. transformers is needed here
(a test dependency) and nowhere else in the package.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from aphrodite.common.config_cli import add_dataclass_args, dataclass_from_args
from aphrodite.modeling.builtin import data
from aphrodite.modeling.builtin.bpe import save_tokenizer, train_tokenizer
from aphrodite.modeling.builtin.chat_format import END_OF_TEXT, IM_END


@dataclass
class TrainConfig:
    """Model shape, corpus size and optimiser settings of a built-in model training run."""

    out: str = "aphrodite/modeling/builtin/checkpoint"
    """Directory to write the checkpoint, tokenizer, eval.json and model card into."""
    data_dir: str = str(data.DATA_DIR)
    """Directory to write the evaluation sets (heldout/general/new_facts .jsonl) into."""
    seed: int = 0
    """Seed of the corpus, tokenizer, initial weights and batch order."""
    dialogues: int = data.DIALOGUES
    """Number of generated training chats."""
    vocab_size: int = 4096
    """BPE vocabulary size, special tokens included."""
    hidden_size: int = 256
    """Width of the residual stream."""
    intermediate_size: int = 704
    """Width of the SwiGLU MLP."""
    num_hidden_layers: int = 6
    """Number of decoder layers."""
    num_attention_heads: int = 8
    """Query heads per layer."""
    num_key_value_heads: int = 4
    """Key/value heads per layer (grouped-query attention)."""
    max_position_embeddings: int = 1024
    """Longest sequence the model is meant for."""
    seq_len: int = 256
    """Tokens per training sequence."""
    batch_size: int = 16
    """Sequences per optimiser step."""
    steps: int = 1000
    """Optimiser steps."""
    lr: float = 2e-3
    """Peak learning rate (AdamW), reached after warm-up and decayed by a cosine to a tenth."""
    warmup_steps: int = 100
    """Linear warm-up steps."""
    weight_decay: float = 0.1
    """AdamW weight decay on matrices (not on norms)."""
    threads: int = 2
    """CPU threads for torch."""

    def __post_init__(self) -> None:
        if self.seq_len > self.max_position_embeddings:
            raise ValueError("seq_len must not exceed max_position_embeddings")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError("hidden_size must be a multiple of num_attention_heads")
        if self.warmup_steps >= self.steps:
            raise ValueError("warmup_steps must be smaller than steps")


def build_model(cfg: TrainConfig, tokenizer_vocab: dict[str, int]):
    """A freshly initialised Llama with tied embeddings, seeded by ``cfg.seed``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(cfg.seed)
    config = LlamaConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers, num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_key_value_heads, max_position_embeddings=cfg.max_position_embeddings,
        rope_theta=10000.0, rms_norm_eps=1e-6, tie_word_embeddings=True,
        bos_token_id=tokenizer_vocab[END_OF_TEXT], eos_token_id=tokenizer_vocab[IM_END],
        pad_token_id=tokenizer_vocab[END_OF_TEXT],
    )
    return LlamaForCausalLM(config)


def pack(tokenizer, texts: list[str]) -> torch.Tensor:
    """All documents as one token stream, each preceded by ``<|endoftext|>``."""
    eot = tokenizer.token_to_id(END_OF_TEXT)
    ids: list[int] = []
    for enc in tokenizer.encode_batch(texts, add_special_tokens=False):
        ids.append(eot)
        ids.extend(enc.ids)
    return torch.tensor(ids, dtype=torch.long)


def lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / (cfg.steps - cfg.warmup_steps)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def train_loop(model, stream: torch.Tensor, cfg: TrainConfig) -> tuple[list[float], list[float]]:
    """Train on random windows of ``stream``; returns the loss and the wall seconds of every step."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.95))
    gen = torch.Generator().manual_seed(cfg.seed)
    offsets = torch.arange(cfg.seq_len)
    losses: list[float] = []
    seconds: list[float] = []
    model.train()
    bar = tqdm(range(cfg.steps), desc="train", unit="step")
    for step in bar:
        tick = time.perf_counter()
        starts = torch.randint(0, len(stream) - cfg.seq_len, (cfg.batch_size,), generator=gen)
        batch = stream[starts[:, None] + offsets]  # (B, T)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        seconds.append(time.perf_counter() - tick)
        bar.set_postfix(loss=f"{sum(losses[-20:]) / len(losses[-20:]):.3f}", refresh=False)
    model.eval()
    return losses, seconds


def save_checkpoint(model, out: Path) -> None:
    """Write ``config.json``, ``model.safetensors`` and ``generation_config.json``."""
    from transformers import GenerationConfig

    model.save_pretrained(out)
    cfg = model.config
    GenerationConfig(bos_token_id=cfg.bos_token_id, eos_token_id=cfg.eos_token_id,
                     pad_token_id=cfg.pad_token_id, do_sample=False).save_pretrained(out)


def run(cfg: TrainConfig) -> dict:
    """Build corpus and tokenizer, train, save, evaluate and write the model card; returns the report."""
    from aphrodite.modeling.builtin.model_card import evaluate_and_document

    torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    started = time.perf_counter()
    corpus = data.build_corpus(cfg.seed, dialogues=cfg.dialogues)
    data.write_eval_sets(corpus, Path(cfg.data_dir))
    tokenizer = train_tokenizer(corpus.train, cfg.vocab_size)
    save_tokenizer(tokenizer, out, cfg.max_position_embeddings)
    stream = pack(tokenizer, corpus.train)
    model = build_model(cfg, tokenizer.get_vocab())
    train_started = time.perf_counter()
    losses, step_seconds = train_loop(model, stream, cfg)
    train_seconds = time.perf_counter() - train_started
    save_checkpoint(model, out)
    report = {
        "config": asdict(cfg), "parameters": sum(p.numel() for p in model.parameters()),
        "corpus_tokens": len(stream), "documents": len(corpus.train),
        "tokens_seen": cfg.steps * cfg.batch_size * cfg.seq_len, "train_seconds": train_seconds,
        "prepare_seconds": train_started - started, "median_step_seconds": statistics.median(step_seconds),
        "final_loss": sum(losses[-50:]) / len(losses[-50:]),
        "threads": cfg.threads, "cpu": _cpu_name(),
    }
    return evaluate_and_document(model, out, Path(cfg.data_dir), report)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_dataclass_args(parser, TrainConfig)
    cfg = dataclass_from_args(TrainConfig, parser.parse_args())
    report = run(cfg)
    print(f"held-out perplexity {report['heldout']['perplexity']:.3f} "
          f"on {report['heldout']['tokens']} tokens; trained in {report['train_seconds'] / 60:.1f} min")


if __name__ == "__main__":
    main()
