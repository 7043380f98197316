"""Facts taught one learning task at a time: are the earlier ones still answered after the later ones?

Protocol: on the built-in model, the first ``--facts`` made-up question/answer facts of ``new_facts.jsonl`` are
taught one per task, each as one curated example (as ``POST /v1/learning/manual`` stores it), each task
training from the deltas of the previous accepted candidate, exactly as the server chains versions (``JobBuilder``
+ ``train_and_gate``, one torch thread). The server's rehearsal (the lineage's earlier supervised targets, see
``LoRALearner._retained``) is reproduced by handing the task every fact accepted before. After each task the
greedy chat answer to every fact taught so far is decoded (learned = it contains the fact's key word). Rows:
rehearsal as shipped, and the named baseline without it (``learner_rehearsal_examples`` 0).

    python benchmarks/learning_sequence.py [--facts 6]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine  # noqa: E402


def run_row(engine, facts: list[dict], rehearse: bool, from_base: bool = False) -> list[dict]:
    from aphrodite.continuous_learning.config import ServerSideConfig
    from aphrodite.continuous_learning.interaction import supplied_interaction
    from aphrodite.continuous_learning.learner import policy
    from aphrodite.continuous_learning.learner.gate import greedy
    from aphrodite.continuous_learning.learner.job import JobBuilder
    from aphrodite.continuous_learning.learner.task import train_and_gate
    from aphrodite.continuous_learning.learner.trainer import attach, trainable_view
    from aphrodite.continuous_learning.store.base import TrainingSignal

    config = ServerSideConfig()
    builder = JobBuilder(engine.model, engine.tokenizer, config, engine.max_model_len)
    builder.reference()  # base values: once per process in the server, not part of a task's time
    parent, taught, retained, rows = {}, [], [], []
    for k, fact in enumerate(facts):
        signals = [TrainingSignal(supplied_interaction(fact["question"], fact["answer"], 0.95, "manual", 0, "m"))]
        admitted = policy.admit(signals)
        job = builder.build(admitted, {} if from_base else parent, config.learner_learning_rate, seed=k,
                            retained=retained[-config.learner_rehearsal_examples:] if rehearse else [])
        t0 = time.monotonic()
        result = train_and_gate(engine.model, job)
        seconds = time.monotonic() - t0
        if result.accepted:
            parent, taught, retained = result.deltas, taught + [fact], retained + admitted
        view = trainable_view(engine.model)
        attach(view, parent)
        recalled = [g["keyword"].lower() in engine.tokenizer.decode(greedy(
            view, builder.chat_prompt([{"role": "user", "content": g["question"]}]), 24, builder.stop_ids)).lower()
            for g in taught]
        rows.append({"fact": fact["keyword"], "accepted": result.accepted, "reason": result.reason,
                     "ppl": result.gate["heldout"]["perplexity_ratio"], "steps": len(result.losses),
                     "seconds": seconds, "recalled": sum(recalled), "taught": len(taught)})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--facts", type=int, default=6)
    ap.add_argument("--rows", nargs="+", default=["parent", "none"], choices=["parent", "base", "none"],
                    help="parent: rehearsal, each task from the parent's deltas; base: rehearsal, each task from "
                         "the base weights; none: no rehearsal (the baseline)")
    args = ap.parse_args()
    from aphrodite.continuous_learning.learner.gate import BUILTIN_DATA
    from aphrodite.engine.config import ModelLoadConfig
    from aphrodite.engine.llm_engine import LLMEngine

    torch.set_num_threads(1)
    rows = [json.loads(line) for line in (BUILTIN_DATA / "new_facts.jsonl").read_text().splitlines() if line]
    facts = [r for r in rows if r.get("kind") == "qa"][:args.facts]
    engine = LLMEngine(ModelLoadConfig())
    print(f"machine: {machine()}; built-in model, one torch thread, {len(facts)} facts one per task")
    print("| row | task | fact | accepted | held-out ppl x | steps | s | taught facts still answered |")
    print("|---|---|---|---|---|---|---|---|")
    names = {"parent": ("rehearsal, from the parent", True, False), "base": ("rehearsal, from the base", True, True),
             "none": ("no rehearsal (baseline)", False, False)}
    for name, rehearse, from_base in (names[r] for r in args.rows):
        for k, r in enumerate(run_row(engine, facts, rehearse, from_base)):
            verdict = "yes" if r["accepted"] else f"no: {r['reason']}"
            print(f"| {name} | {k + 1} | {r['fact']} | {verdict} | {r['ppl']:.4f} | {r['steps']} | "
                  f"{r['seconds']:.1f} | {r['recalled']} of {r['taught']} |", flush=True)


if __name__ == "__main__":
    main()
