"""How the learner's defaults were chosen: does ONE learning task teach three made-up facts, and what does it cost?

Protocol (issue 9, item 2): on the built-in model, three made-up facts from ``new_facts.jsonl`` (a capital, an
inventor, a book author: different shapes) are each given as one curated example, exactly as
``POST /v1/learning/manual`` stores them; the signal policy admits them, ``JobBuilder`` makes the job the server
would make, and ``train_and_gate`` trains and gates it, one torch thread, from the base weights. Then the
candidate's greedy chat answer to each taught question is decoded: a fact counts as learned when the answer
contains its key word. The gate reports whether every protected fact keeps its answer and the held-out
perplexity ratio to the base model. Rows vary one setting at a time around the defaults (the named baseline
is the previous defaults: 10 steps at lr 1e-4).

Usage::

    python benchmarks/learning_defaults.py [--rows default,old,...] [--seeds 0,1]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import torch

from aphrodite.continuous_learning.config import ServerSideConfig
from aphrodite.continuous_learning.interaction import supplied_interaction
from aphrodite.continuous_learning.learner import policy
from aphrodite.continuous_learning.learner.gate import BUILTIN_DATA, greedy
from aphrodite.continuous_learning.learner.job import JobBuilder
from aphrodite.continuous_learning.learner.task import train_and_gate
from aphrodite.continuous_learning.learner.trainer import attach, trainable_view
from aphrodite.continuous_learning.store.base import TrainingSignal
from aphrodite.engine.config import ModelLoadConfig
from aphrodite.engine.llm_engine import LLMEngine
from benchmarks.common import machine

FACTS = (0, 4, 5)
"""Lines of new_facts.jsonl taught: capital of Veloria, inventor of the glimmer lamp, author of a book."""

ROWS: dict[str, dict] = {
    "default": {},
    "old defaults (10 steps, lr 1e-4)": dict(learner_steps=10, learner_learning_rate=1e-4, learner_stop_loss=0.0,
                                             learner_anchor_weight=0.0),
    "lr 1e-3": dict(learner_learning_rate=1e-3),
    "lr 2.5e-4": dict(learner_learning_rate=2.5e-4),
    "no anchors": dict(learner_anchor_weight=0.0),
    "anchor weight 200": dict(learner_anchor_weight=200.0),
    "no replay": dict(learner_replay_share=0.0),
    "no early stop": dict(learner_stop_loss=0.0),
    "40 steps": dict(learner_steps=40),
    "rank 4": dict(learner_rank=4, learner_alpha=8.0),
}


def facts() -> list[dict]:
    rows = [json.loads(line) for line in (BUILTIN_DATA / "new_facts.jsonl").read_text().splitlines() if line]
    return [rows[i] for i in FACTS]


def run_row(engine: LLMEngine, overrides: dict, seed: int) -> dict:
    config = dataclasses.replace(ServerSideConfig(), **overrides)
    builder = JobBuilder(engine.model, engine.tokenizer, config, engine.max_model_len)
    taught = facts()
    signals = [TrainingSignal(supplied_interaction(f["question"], f["answer"], 0.95, "manual", 0, "m"))
               for f in taught]
    builder.reference()  # base values: once per process in the server, not part of a task's time
    job = builder.build(policy.admit(signals), {}, config.learner_learning_rate, seed=seed)
    t0 = time.monotonic()
    result = train_and_gate(engine.model, job)
    seconds = time.monotonic() - t0
    view = trainable_view(engine.model)
    attach(view, result.deltas)
    learned = 0
    answers = []
    for f in taught:
        prompt = builder.chat_prompt([{"role": "user", "content": f["question"]}])
        answer = engine.tokenizer.decode(greedy(view, prompt, 24, builder.stop_ids))
        answers.append(answer)
        learned += f["keyword"].lower() in answer.lower()
    gate = result.gate
    return {"learned": learned, "protected_kept": not gate["protected_facts"]["greedy_changed"],
            "worst_drop": gate["protected_facts"]["worst_logprob_drop"],
            "heldout_ratio": gate["heldout"]["perplexity_ratio"], "accepted": result.accepted,
            "steps": len(result.losses), "stop": result.stop_reason, "seconds": seconds, "answers": answers,
            "reason": result.reason}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", default=";".join(ROWS), help="semicolon-separated row names")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (LoRA init and shuffling)")
    parser.add_argument("--verbose", action="store_true", help="print the taught answers of every run")
    args = parser.parse_args()
    torch.set_num_threads(1)
    engine = LLMEngine(ModelLoadConfig())
    seeds = [int(s) for s in args.seeds.split(",")]
    print(f"machine: {machine()}; built-in model, facts {FACTS} of new_facts.jsonl, seeds {seeds}")
    print(f"{'row':34} {'learned':>8} {'kept':>5} {'drop':>6} {'ppl x':>7} {'passed':>6} {'steps':>5} {'s':>6}")
    for name in args.rows.split(";"):
        runs = [run_row(engine, ROWS[name], seed) for seed in seeds]
        mean = lambda k: sum(r[k] for r in runs) / len(runs)  # noqa: E731
        print(f"{name:34} {'/'.join(str(r['learned']) for r in runs):>8} "
              f"{sum(r['protected_kept'] for r in runs)}/{len(runs):<3} {max(r['worst_drop'] for r in runs):6.2f} "
              f"{max(r['heldout_ratio'] for r in runs):7.4f} {sum(r['accepted'] for r in runs)}/{len(runs):<4} "
              f"{mean('steps'):5.0f} {mean('seconds'):6.1f}", flush=True)
        if args.verbose:
            for r in runs:
                print("    ", r["answers"], r["stop"], r["reason"])


if __name__ == "__main__":
    main()
