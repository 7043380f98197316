"""The built-in model's training corpus and evaluation sets, generated deterministically from a seed.

Sources: chats and paragraphs generated from the fact tables in ``knowledge.py`` (written for this
project) and standard library docstrings (PSF License, see ``stdlib_text.py``). Evaluation sets:

- ``heldout``: chats and plain text never in the training text; their (question, answer) pairs are
  banned from training, and the docstrings come from modules not trained on.
- ``general``: questions about facts the model was trained on, to check later learning does not erase them.
- ``new_facts``: questions about made-up things, absent from training, for later learning work to teach.

Run ``python -m aphrodite.modeling.builtin.data`` to rewrite the evaluation files in ``data/``.
"""

from __future__ import annotations

import argparse
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aphrodite.modeling.builtin import knowledge as kb
from aphrodite.modeling.builtin import questions as qs
from aphrodite.modeling.builtin.chat_format import render_chat
from aphrodite.modeling.builtin.stdlib_text import HELDOUT_MODULES, TRAIN_MODULES, docstrings

DATA_DIR = Path(__file__).parent / "data"
EVAL_SETS = ("heldout", "general", "new_facts")
DIALOGUES = 25000
"""Generated training chats in the shipped model's corpus."""
Record = dict[str, Any]


@dataclass
class Corpus:
    """Training documents (rendered text) and the evaluation records kept out of them."""

    train: list[str]
    eval_sets: dict[str, list[Record]] = field(default_factory=dict)


def record_text(record: Record) -> str:
    """The text a record stands for: a rendered chat, or plain text as it is."""
    if "text" in record:
        return record["text"]
    if "messages" in record:
        return render_chat(record["messages"])
    return render_chat([{"role": "user", "content": record["question"]},
                        {"role": "assistant", "content": record["answer"]}])


def _dialogue(rng: random.Random, pairs: list[qs.QA]) -> list[dict[str, str]]:
    messages = []
    if rng.random() < 0.3:
        messages.append({"role": "system", "content": rng.choice(kb.SYSTEM_PROMPTS)})
    for q, a in pairs:
        messages += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    return messages


def _training_pairs(rng: random.Random, banned: set[qs.QA]) -> list[qs.QA]:
    pairs = [qs.small_talk(rng)] if rng.random() < 0.15 else []
    turns = len(pairs) + rng.choice((1, 1, 2, 2, 3))
    while len(pairs) < turns:
        pair = qs.draw(rng)
        if pair not in banned:
            pairs.append(pair)
    return pairs


def _paragraphs(rng: random.Random, copies: int) -> list[str]:
    # Plain-text statements of the same facts, so the model also sees them outside a chat.
    texts = []
    for _ in range(copies):
        for country, city, continent, language in kb.COUNTRIES:
            name = country[:1].upper() + country[1:]
            sentences = [f"{city} is the capital of {country}.", f"{name} is a country in {continent}.",
                         f"Most people in {country} speak {language}."]
            rng.shuffle(sentences)
            texts.append(" ".join(sentences))
        for name, plural, sound, klass, home, legs in kb.ANIMALS:
            sentences = [f"The {name} is a {klass}.", f"A {name} {sound}.", f"{plural.capitalize()} live {home}.",
                         f"A {name} has {kb.NUMBER_WORDS[legs]} legs."]
            rng.shuffle(sentences)
            texts.append(" ".join(sentences))
        facts = [a for _, a in kb.FACTS]
        rng.shuffle(facts)
        texts += [" ".join(facts[i:i + 4]) for i in range(0, len(facts), 4)]
    return texts


# Held-out chats draw only from generators with many combinations, so banning their pairs from
# training removes little; fixed tables (small talk, science facts) stay fully in training.
_HELDOUT_GENERATORS = (qs.capital, qs.animal, qs.colour, qs.opposite, qs.calendar, qs.arithmetic,
                       qs.counting, qs.spelling)


def _heldout_chats(rng: random.Random, count: int) -> list[Record]:
    records = []
    for _ in range(count):
        pairs = [rng.choice(_HELDOUT_GENERATORS)(rng) for _ in range(rng.choice((1, 2, 3)))]
        records.append({"kind": "chat", "messages": _dialogue(rng, pairs)})
    return records


def _general(banned: set[qs.QA]) -> list[Record]:
    # One fixed phrasing per fact, in the training text, with the word a right answer must contain.
    items = [(f"What is the capital of {c}?", f"The capital of {c} is {city}.", city)
             for c, city, _, _ in kb.COUNTRIES[::4]]
    items += [(f"What sound does a {a} make?", f"A {a} {s}.", s) for a, _, s, *_ in kb.ANIMALS[:6]]
    items += [(f"What colour is {t}?", f"{t[:1].upper() + t[1:]} is {c}.", c) for t, c in kb.COLOURS[:5]]
    items += [(f"What is the opposite of {w}?", f"The opposite of {w} is {o}.", o) for w, o in kb.OPPOSITES[:5]]
    return [{"kind": "qa", "question": q, "answer": a, "keyword": k} for q, a, k in items if (q, a) not in banned]


def build_corpus(seed: int = 0, dialogues: int = DIALOGUES, paragraph_copies: int = 20,
                 heldout_chats: int = 48, heldout_docs: int = 16) -> Corpus:
    """Generate the training documents and evaluation sets; the same arguments give the same corpus."""
    rng = random.Random(seed)
    heldout = _heldout_chats(random.Random(seed + 1), heldout_chats)
    banned = {(m["content"], r["messages"][i + 1]["content"]) for r in heldout
              for i, m in enumerate(r["messages"]) if m["role"] == "user"}
    held_docs = docstrings(HELDOUT_MODULES)
    heldout += [{"kind": "text", "text": t} for t in random.Random(seed + 2).sample(held_docs, heldout_docs)]
    train = [render_chat(_dialogue(rng, _training_pairs(rng, banned))) for _ in range(dialogues)]
    train += _paragraphs(rng, paragraph_copies) + docstrings(TRAIN_MODULES)
    rng.shuffle(train)
    new_facts = [{"kind": "qa", "question": q, "answer": a, "keyword": k} for q, a, k in kb.FICTIONAL_FACTS]
    return Corpus(train, {"heldout": heldout, "general": _general(banned), "new_facts": new_facts})


def load_eval_set(name: str, data_dir: Path = DATA_DIR) -> list[Record]:
    """Read one evaluation set (``heldout``, ``general`` or ``new_facts``) from its JSON-lines file."""
    if name not in EVAL_SETS:
        raise ValueError(f"unknown evaluation set {name!r}; known: {', '.join(EVAL_SETS)}")
    with open(Path(data_dir) / f"{name}.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def write_eval_sets(corpus: Corpus, data_dir: Path = DATA_DIR) -> None:
    """Write each evaluation set as ``<name>.jsonl`` under ``data_dir``."""
    Path(data_dir).mkdir(parents=True, exist_ok=True)
    for name, records in corpus.eval_sets.items():
        with open(Path(data_dir) / f"{name}.jsonl", "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR)
    args = parser.parse_args()
    write_eval_sets(build_corpus(args.seed), args.data_dir)


if __name__ == "__main__":
    main()
