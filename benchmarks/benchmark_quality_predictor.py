"""Does the learned quality predictor tell right answers from wrong ones, and after how many labels?

Stream: the built-in model answers fact questions (the held-out chats' question/answer pairs, whose exact
pairs were banned from training; the ``general`` facts it was trained on; the made-up ``new_facts`` it never
saw; more pairs drawn from the generators behind the held-out chats, most of them seen in training: they give
the evaluation many more questions), several samples per question at temperatures 0.3, 0.7, 1.0 and 1.3 in
turn, with the projected hidden states of the generated tokens (``--hidden-state-dim``, as the server asks for
them). Label: 1 when the reply's first sentence contains every key word of the reference answer (its words
that are not in the question, less function words), else 0; checkable from the printed examples.

Protocol: the questions are split into a training and an evaluation group (an evaluation question never
appears among the training labels, so no row can win by memorising questions). Training labels arrive one at
a time in a shuffled order; after 10, 20, 50, ... labels each row scores every evaluation response and we
report the ROC AUC against the labels. Repeated over ``--splits`` random splits; mean and spread shown.

Rows, all fed the same labels in the same order:
- reservoir: the server's ``LearnedQualityPredictor`` (DeepTreeESN features per writer batch, RLS readout);
- server score: the quality score the server stores, heuristic blended with that prediction at its earned
  weight (``predictor_max_weight * weight``; no explicit feedback on the evaluation responses);
- heuristic: ``QualityScorer`` alone (finish reason, repetition; no latency offline): the named baseline;
- ridge on mean-pooled: ``Ridge`` on the mean of the RMS-normalised hidden states, no reservoir;
- mean logprob: the model's own mean log-probability of the sampled tokens; needs no label at all.

Usage::

    python benchmarks/benchmark_quality_predictor.py [--samples 4] [--max-tokens 24] [--plot PATH]
"""

from __future__ import annotations

import argparse
import math
import hashlib
import random
import re
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from aphrodite.continuous_learning import QualityScorer, ServerSideConfig  # noqa: E402
from aphrodite.continuous_learning.interaction import Choice, Interaction  # noqa: E402
from aphrodite.continuous_learning.scoring.learned import LearnedQualityPredictor  # noqa: E402
from aphrodite.engine.config import ModelLoadConfig  # noqa: E402
from aphrodite.engine.llm_engine import LLMEngine  # noqa: E402
from aphrodite.engine.sampling_params import SamplingParams  # noqa: E402
from aphrodite.modeling.builtin import questions as qs  # noqa: E402
from aphrodite.modeling.builtin.data import load_eval_set  # noqa: E402
from aphrodite.reservoir import Ridge  # noqa: E402
from benchmarks.common import machine  # noqa: E402

ROWS = ("reservoir", "server score", "heuristic", "ridge on mean-pooled", "mean logprob")
FUNCTION_WORDS = {"a", "an", "the", "is", "are", "of", "in", "on", "to", "and", "it", "has", "have", "with", "by"}
WRITER_BATCH = 16  # responses per reservoir run, like a writer batch under light load


@dataclass
class Response:
    """One sampled answer with its label and what each predictor sees."""

    question: int
    source: str
    text: str
    label: int
    hidden: torch.Tensor  # (T, d)
    mean_logprob: float
    """The model's own confidence: mean log-probability of the sampled tokens."""
    interaction: Interaction


def fact_questions(extra: int, seed: int = 0) -> list[tuple[str, str, str]]:
    """(question, reference answer, source) from the held-out chats and the two question/answer sets, plus
    ``extra`` pairs drawn from the training generators behind the held-out chats (``generated``)."""
    pairs: dict[tuple[str, str], str] = {}
    for record in load_eval_set("heldout"):
        messages = record.get("messages", [])
        for m, reply in zip(messages, messages[1:]):
            if m["role"] == "user" and reply["role"] == "assistant":
                pairs.setdefault((m["content"], reply["content"]), "heldout")
    for name in ("general", "new_facts"):
        for record in load_eval_set(name):
            pairs.setdefault((record["question"], record["answer"]), name)
    rng, asked = random.Random(seed), {q for q, _ in pairs}
    generators = (qs.capital, qs.animal, qs.colour, qs.opposite, qs.calendar, qs.arithmetic, qs.counting,
                  qs.spelling)
    for _ in range(extra * 20):
        if sum(source == "generated" for source in pairs.values()) >= extra:
            break
        q, a = rng.choice(generators)(rng)
        if q not in asked:  # one reference answer per question
            asked.add(q)
            pairs[(q, a)] = "generated"
    return [(q, a, source) for (q, a), source in pairs.items()]


def words(text: str) -> list[str]:
    return [w for w in (t.strip(".,;:!?\"'()").lower() for t in text.split()) if w]


def key_words(question: str, answer: str) -> set[str]:
    """What a right reply must say: the answer's words that the question does not already give."""
    return set(words(answer)) - set(words(question)) - FUNCTION_WORDS


def is_correct(reply: str, keys: set[str]) -> bool:
    first = re.split(r"(?<=[.!?])\s|\n", reply.strip(), maxsplit=1)[0]
    return bool(keys) and keys <= set(words(first))


def generate_stream(engine: LLMEngine, samples: int, max_tokens: int, extra: int,
                    temperatures: list[float]) -> list[Response]:
    questions = fact_questions(extra)
    prompts, params, owners = [], [], []
    for qi, (question, _, _) in enumerate(questions):
        text = engine.tokenizer.apply_chat_template([{"role": "user", "content": question}])
        ids = engine.tokenizer.encode(text, add_special_tokens=False)  # as the chat endpoint encodes it
        for s in range(samples):
            prompts.append(ids)
            params.append(SamplingParams(temperature=temperatures[s % len(temperatures)], max_tokens=max_tokens,
                                         seed=1000 * qi + s, logprobs=0, return_hidden_states=True))
            owners.append(qi)
    outputs = engine.generate(prompts, params)
    stream = []
    for k, (qi, out) in enumerate(zip(owners, outputs)):
        question, answer, source = questions[qi]
        c = out.outputs[0]
        interaction = Interaction(f"r{k}", "/v1/chat/completions", [Choice(c.text, (), c.finish_reason)],
                                  prompt=question, completion_tokens=len(c.token_ids))
        mean_logprob = c.cumulative_logprob / max(len(c.token_ids), 1)
        interaction.model_confidence = math.exp(mean_logprob)  # as the server captures it
        stream.append(Response(qi, source, c.text, int(is_correct(c.text, key_words(question, answer))),
                               c.hidden_states.float(), mean_logprob, interaction))
    return [r for r in stream if r.hidden.shape[0] > 0]


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """P(a positive outscores a negative), ties half (Mann-Whitney)."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    return float((pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean())


def mean_pooled(hidden: torch.Tensor) -> torch.Tensor:
    """(d,) float64 mean of the per-token RMS-normalised states (the same normalisation the reservoir gets)."""
    h = hidden.double()
    return (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6)).mean(0)


class _Prediction:
    """The learned predictor's current opinion on the evaluation responses, behind the scorer's seam."""

    def __init__(self, accuracy: float, by_id: dict[str, float]) -> None:
        self.accuracy, self.by_id = accuracy, by_id

    def predict(self, interaction: Interaction) -> float | None:
        return self.by_id.get(interaction.id)


def run_split(stream: list[Response], seed: int, checkpoints: list[int]) -> dict[str, np.ndarray]:
    """For one question split and label order: each row's AUC at each checkpoint on all evaluation answers
    (key ``row``) and on those to held-out-set questions only (``row/heldout``); the reservoir's weight; the
    reservoir's seconds per writer batch (``observe_s``)."""
    rng = random.Random(seed)
    qids = sorted({r.question for r in stream})
    rng.shuffle(qids)
    held_out = set(qids[: len(qids) * 3 // 10])
    train = [r for r in stream if r.question not in held_out]
    test = [r for r in stream if r.question in held_out]
    rng.shuffle(train)
    y, only_heldout = np.array([r.label for r in test]), np.array([r.source == "heldout" for r in test])
    config = ServerSideConfig(learning_dir=tempfile.mkdtemp(prefix="bench-qp-"), quality_predictor_save_every=10**9)
    learned, ridge = LearnedQualityPredictor(config), Ridge(ridge=1.0)
    x_mean = torch.stack([mean_pooled(r.hidden) for r in test])  # (n_test, d)
    fixed = {"heuristic": np.array([QualityScorer().score(r.interaction) for r in test]),
             "mean logprob": np.array([r.mean_logprob for r in test])}
    out: dict[str, list[float]] = {}
    feats, observe_s = None, []
    for start in range(0, len(train), WRITER_BATCH):
        chunk = train[start : start + WRITER_BATCH]
        for r in chunk:
            r.interaction.hidden_states = r.hidden
        t0 = time.perf_counter()
        learned.observe([r.interaction for r in chunk])
        observe_s.append(time.perf_counter() - t0)
        if feats is None:  # the reservoir is fixed: the evaluation features never change
            feats = learned.model.features([r.hidden for r in test])  # (n_test, 2F)
        for seen, r in enumerate(chunk, start + 1):
            r.interaction.user_satisfaction = 1.0 if r.label else -1.0  # explicit feedback, as the API takes it
            learned.learn(r.interaction)
            r.interaction.user_satisfaction = None
            ridge.partial_fit(mean_pooled(r.hidden)[None], torch.tensor([[float(r.label)]], dtype=torch.float64))
            if seen not in checkpoints:
                continue
            pred = learned.model.readout.run(feats)[:, 0].clamp(0, 1).numpy()
            blend = QualityScorer(predictor=_Prediction(learned.accuracy, {
                t.interaction.id: float(p) for t, p in zip(test, pred)}))
            scores = {"reservoir": pred, "server score": np.array([blend.score(t.interaction) for t in test]),
                      "ridge on mean-pooled": ridge.run(x_mean)[:, 0].numpy(), **fixed}
            for name in ROWS:
                out.setdefault(name, []).append(auc(scores[name], y))
                out.setdefault(name + "/heldout", []).append(auc(scores[name][only_heldout], y[only_heldout]))
            out.setdefault("weight", []).append(learned.accuracy)
    result = {k: np.array(v) for k, v in out.items()}
    result["observe_s"] = np.array([float(np.median(observe_s))])
    return result


def fmt(values: np.ndarray) -> str:
    return f"{np.nanmean(values):.3f} ± {np.nanstd(values):.3f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=None, help="checkpoint directory (default: the built-in model)")
    p.add_argument("--samples", type=int, default=4, help="answers sampled per question")
    p.add_argument("--max-tokens", type=int, default=24)
    p.add_argument("--extra-questions", type=int, default=500,
                   help="questions drawn from the training generators, beside the held-out and fact sets")
    p.add_argument("--temperatures", default="0.3,0.7,1.0,1.3", help="sampling temperatures, used in turn")
    p.add_argument("--hidden-state-dim", type=int, default=64, help="as the server's --hidden-state-dim")
    p.add_argument("--splits", type=int, default=10, help="random question splits / label orders")
    p.add_argument("--plot", default="docs/quality_predictor_auc.png", help="PNG to write ('' for none)")
    args = p.parse_args()
    torch.set_num_threads(1)  # tiny ops: more threads only wait on a shared host (the engine too, here)

    engine = LLMEngine(ModelLoadConfig(model=args.model, hidden_state_dim=args.hidden_state_dim, device="cpu"))
    t0 = time.perf_counter()
    temperatures = [float(t) for t in args.temperatures.split(",")]
    stream = generate_stream(engine, args.samples, args.max_tokens, args.extra_questions, temperatures)
    gen_s = time.perf_counter() - t0
    # the split is by question, so the training part varies a little in size: stay under its smallest
    checkpoints = [n for n in (10, 20, 50, 100, 200, 500, 1000, 1500, 2000) if n <= len(stream) * 0.6]
    results = [run_split(stream, seed, checkpoints) for seed in range(args.splits)]
    table = {k: np.stack([r[k] for r in results]) for k in results[0]}  # (splits, checkpoints)

    print(f"machine: {machine()}")
    weights = hashlib.sha256((engine.model_dir / "model.safetensors").read_bytes()).hexdigest()[:12]
    print(f"model: {engine.model_name} ({engine.model_dir}, weights sha256 {weights}); {len(stream)} answers generated in {gen_s:.0f} s; "
          f"reservoir features: {1e3 * np.median(table['observe_s']):.1f} ms per {WRITER_BATCH}-answer writer "
          f"batch (1 thread); temperatures {temperatures}")
    for source in ("heldout", "general", "new_facts", "generated"):
        part = [r for r in stream if r.source == source]
        if part:
            print(f"  {source:9s}: {len(part):4d} answers to {len({r.question for r in part}):3d} questions, "
                  f"{np.mean([r.label for r in part]):.0%} right")
    examples = {(r.label, r.question): r for r in stream if r.source == "heldout"}
    for label in (1, 0):
        for r in [r for (lab, _), r in examples.items() if lab == label][:2]:
            print(f"  e.g. label {r.label}: {r.interaction.prompt!r} -> {r.text.strip()[:60]!r}")
    print_table(f"ROC AUC on the evaluation questions vs labels seen (mean ± sd over {args.splits} splits; "
                "baseline: heuristic)", checkpoints, table, "")
    print_table("The same, scored on the held-out-set questions among them only", checkpoints, table, "/heldout")
    if args.plot:
        plot(checkpoints, table, args.plot, len(stream))


def print_table(title: str, checkpoints: list[int], table: dict[str, np.ndarray], suffix: str) -> None:
    header = ["labels", *ROWS, "reservoir weight"]
    print(f"\n{title}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---:" for _ in header) + "|")
    for j, n in enumerate(checkpoints):
        cells = [fmt(table[k + suffix][:, j]) for k in ROWS] + [f"{table['weight'][:, j].mean():.2f}"]
        print(f"| {n} | " + " | ".join(cells) + " |")


def plot(checkpoints: list[int], table: dict[str, np.ndarray], path: str, n: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.2))
    for name in ROWS:
        mean, sd = np.nanmean(table[name], 0), np.nanstd(table[name], 0)
        label_free = name in ("heuristic", "mean logprob")
        legend = {"server score": "server score (heuristic + reservoir x weight)"}.get(name, name)
        ax.plot(checkpoints, mean, marker="o", label=legend + (" (no labels)" if label_free else ""),
                linestyle="--" if label_free else "-")
        ax.fill_between(checkpoints, mean - sd, mean + sd, alpha=0.15)
    ax.axhline(0.5, color="grey", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("explicit labels seen")
    ax.set_ylabel("ROC AUC on evaluation questions")
    ax.set_title(f"Predicting answer correctness ({n} answers, built-in model)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"\nplot: {path}")


if __name__ == "__main__":
    main()
