"""Measure a model on the built-in evaluation sets through plain callables.

The model is reached only through ``logits_fn`` (token ids -> logits) or ``answer_fn`` (question ->
answer text), so transformers, the engine's own model or a model under continual learning can all be
measured the same way. Tokenization uses the checkpoint's ``tokenizer.json`` and chat template
directly, without transformers.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer

from aphrodite.modeling.builtin.chat_format import render_chat
from aphrodite.modeling.builtin.data import DATA_DIR, Record, load_eval_set, record_text

CHECKPOINT_DIR = Path(__file__).parent / "checkpoint"
LogitsFn = Callable[[torch.LongTensor], torch.Tensor]
"""Maps input ids of shape (1, T) to next-token logits of shape (1, T, V)."""
AnswerFn = Callable[[str], str]
"""Maps a user question to the model's reply text."""


@dataclass
class Perplexity:
    """Token-level perplexity: exp of the mean negative log-likelihood over all predicted tokens."""

    perplexity: float
    tokens: int
    nll: float

    def to_json(self) -> dict[str, float | int]:
        return {"perplexity": self.perplexity, "tokens": self.tokens, "mean_nll": self.nll}


def load_tokenizer(checkpoint_dir: Path = CHECKPOINT_DIR) -> Tokenizer:
    """The checkpoint's tokenizer, from ``tokenizer.json``."""
    return Tokenizer.from_file(str(Path(checkpoint_dir) / "tokenizer.json"))


def encode_records(tokenizer: Tokenizer, records: list[Record], max_len: int = 1024) -> list[list[int]]:
    """Token ids of each record's text (chats rendered with the chat template), cut to ``max_len``."""
    return [tokenizer.encode(record_text(r), add_special_tokens=False).ids[:max_len] for r in records]


@torch.no_grad()
def perplexity(logits_fn: LogitsFn, sequences: list[list[int]]) -> Perplexity:
    """Perplexity of the model behind ``logits_fn`` on ``sequences``, one sequence per call.

    Each sequence's first token is context only; every later token is predicted and counted.
    """
    total_nll, count = 0.0, 0
    for ids in sequences:
        if len(ids) < 2:
            continue
        input_ids = torch.tensor([ids], dtype=torch.long)  # (1, T)
        logits = logits_fn(input_ids)  # (1, T, V)
        if logits.shape[:2] != input_ids.shape:
            raise ValueError(f"logits_fn returned shape {tuple(logits.shape)} for input {tuple(input_ids.shape)}")
        nll = F.cross_entropy(logits[0, :-1].float(), input_ids[0, 1:], reduction="sum")
        total_nll += nll.item()
        count += len(ids) - 1
    if count == 0:
        raise ValueError("no tokens to score: every sequence is shorter than two tokens")
    mean = total_nll / count
    return Perplexity(perplexity=math.exp(mean), tokens=count, nll=mean)


def heldout_perplexity(logits_fn: LogitsFn, checkpoint_dir: Path = CHECKPOINT_DIR,
                       name: str = "heldout", data_dir: Path = DATA_DIR) -> Perplexity:
    """Perplexity on one evaluation set (``heldout`` by default) with the checkpoint's tokenizer."""
    sequences = encode_records(load_tokenizer(checkpoint_dir), load_eval_set(name, data_dir))
    return perplexity(logits_fn, sequences)


def fact_recall(answer_fn: AnswerFn, records: list[Record]) -> float:
    """Fraction of question/answer records whose reply contains the record's keyword (case-blind)."""
    if not records:
        raise ValueError("no records to check")
    hits = sum(r["keyword"].lower() in answer_fn(r["question"]).lower() for r in records)
    return hits / len(records)


def chat_prompt(question: str, system: str | None = None) -> str:
    """The rendered prompt asking ``question``, ending where the assistant's reply starts."""
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": question}]
    return render_chat(messages, add_generation_prompt=True)


def read_eval_json(checkpoint_dir: Path = CHECKPOINT_DIR) -> dict:
    """The figures recorded when the checkpoint was trained (``eval.json``)."""
    return json.loads((Path(checkpoint_dir) / "eval.json").read_text())
