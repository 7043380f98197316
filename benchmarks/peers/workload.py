"""Token-id workloads shared by our engine and every peer, so all of them run exactly the same requests.

A workload is a list of ``Request``: prompt token ids, the number of tokens to produce (EOS ignored), and the
sampling settings. It is written to one JSON file that each peer's worker process reads; the workers need only
the standard library to read it (they run in the peers' own virtual environments).
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

WORDS = ("the model server learns from every request and answers questions about cats dogs rivers numbers "
         "colours cities music books science history weather what is why how does a an of to in").split()

SYSTEM_PROMPT = ("You are a helpful assistant for a small library. Answer questions about books, music, science, "
                 "history and the weather in short plain sentences. Be kind, be brief, and say when you do not "
                 "know. Never invent a title or a date.")

SAMPLED = {"temperature": 0.8, "top_p": 0.95}
GREEDY = {"temperature": 0.0, "top_p": 1.0}


@dataclass
class Request:
    """One request of a workload."""

    prompt: list[int]
    """Prompt token ids."""
    max_tokens: int
    """Exactly this many tokens are produced (EOS is ignored)."""
    temperature: float
    """0 means greedy."""
    top_p: float
    """Nucleus sampling mass (1.0: off)."""


Encode = Callable[[str], list[int]]


def _words(rng: random.Random, encode: Encode, length: int) -> list[int]:
    ids: list[int] = []
    while len(ids) < length:
        ids += encode(" ".join(rng.choice(WORDS) for _ in range(16)))
    return ids[:length]


def mixed(encode: Encode, n: int, seed: int, prompt_range: tuple[int, int], output_range: tuple[int, int],
          sampling: dict[str, float]) -> list[Request]:
    """Prompts of English words cut to a drawn token length, each with a drawn output length (the same draws
    for greedy and sampled, so the two differ only in sampling)."""
    rng = random.Random(seed)
    work = []
    for _ in range(n):
        prompt = _words(rng, encode, rng.randint(*prompt_range))
        work.append(Request(prompt, rng.randint(*output_range), **sampling))
    return work


def chat(encode: Encode, n: int, seed: int, question_range: tuple[int, int], output_range: tuple[int, int],
         chat_ids: Callable[[str, list[int]], list[int]]) -> list[Request]:
    """Chat turns that all start with the same system prompt (the case a prefix cache serves); ``chat_ids``
    wraps the system prompt and a user question (token ids) in the model's chat format."""
    rng = random.Random(seed + 1)
    work = []
    for _ in range(n):
        question = _words(rng, encode, rng.randint(*question_range))
        work.append(Request(chat_ids(SYSTEM_PROMPT, question), rng.randint(*output_range), **SAMPLED))
    return work


def single_stream(encode: Encode, prompt_len: int, output_len: int) -> dict[str, list[Request]]:
    """One greedy request twice: producing 1 token and ``output_len`` tokens. Their time difference over
    ``output_len - 1`` tokens is the decode rate, free of model load, prefill and warm-up."""
    prompt = _words(random.Random(7), encode, prompt_len)
    return {"single-1": [Request(prompt, 1, **GREEDY)], "single-n": [Request(prompt, output_len, **GREEDY)]}


def decode_rate(seconds: dict[str, float], output_len: int) -> float | None:
    """Single-stream decode tokens/s from the two timed single-stream workloads."""
    if "single-1" not in seconds or "single-n" not in seconds:
        return None
    return (output_len - 1) / max(1e-9, seconds["single-n"] - seconds["single-1"])


def save(workloads: dict[str, list[Request]], path: Path) -> None:
    path.write_text(json.dumps({name: [asdict(r) for r in reqs] for name, reqs in workloads.items()}))


def load(path: Path) -> dict[str, list[Request]]:
    return {name: [Request(**r) for r in reqs] for name, reqs in json.loads(Path(path).read_text()).items()}
