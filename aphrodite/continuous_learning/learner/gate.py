"""The gate: whether a trained candidate may serve. Three checks, all on the candidate alone:

* protected facts: question/answer pairs whose greedy answer must stay the base model's and whose answer
  log-probability may fall by at most ``logprob_tolerance`` nats below the base model's;
* held-out text: perplexity may rise by at most ``max_heldout_regression`` (relative) above the base model's;
* target: the candidate must fit what it was taught better than its parent (on a held-out part of the
  examples when there are enough of them);
* retained: what earlier versions of its lineage were taught (rehearsed in the task) stays the greedy
  answer at least as often as with the parent.

Base-model values are computed once per process with no deltas (``base_reference``), so drift cannot
compound from version to version. The greedy check is exact and needs one forward pass: greedy decoding
reproduces the base answer iff the candidate's argmax at every position of that answer is the base token.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from aphrodite.continuous_learning.learner.trainer import Example, argmax_matches, mean_nll, token_logps
from aphrodite.modeling.attention import AttentionMetadata
from aphrodite.modeling.llama import LlamaForCausalLM

BUILTIN_DATA = Path(__file__).resolve().parents[2] / "modeling" / "builtin" / "data"


@dataclass
class ProtectedFact:
    """A question whose answer a candidate must not change; ids are the chat prompt and the answer + eos."""

    question: str
    prompt_ids: list[int]
    answer_ids: list[int]
    base_greedy: list[int] = field(default_factory=list)
    """The base model's greedy answer (token ids, ending with the stop token when it stopped)."""
    base_logp: float = 0.0
    """The base model's summed log-probability of ``answer_ids``."""


@dataclass
class GateReference:
    """What the gate compares a candidate with: the base model's values, computed once per process."""

    facts: list[ProtectedFact]
    heldout: list[Example]
    heldout_base_nll: float = 0.0


@dataclass
class GateLimits:
    logprob_tolerance: float = 1.0
    max_heldout_regression: float = 0.02


def read_qa(path: Path) -> list[tuple[str, str]]:
    """(question, answer) pairs from a JSONL file of {"question": ..., "answer": ...} lines."""
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    return [(r["question"], r["answer"]) for r in rows]


def read_heldout(path: Path) -> list[list[dict[str, Any]] | str]:
    """Held-out texts from JSONL: {"messages": [...]} chats or {"text": ...} plain texts."""
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    return [r["messages"] if "messages" in r else r["text"] for r in rows]


def greedy(view: LlamaForCausalLM, prompt_ids: list[int], max_new: int, stop_ids: set[int]) -> list[int]:
    """Greedy decoding without a cache (the answers checked here are a few tokens)."""
    ids = list(prompt_ids)
    device = next(view.parameters()).device
    with torch.inference_mode():
        for _ in range(max_new):
            x = torch.tensor([ids], device=device)  # (1, T)
            meta = AttentionMetadata(True, AttentionMetadata.causal([len(ids)], len(ids), device))
            hidden = view(x, torch.arange(len(ids), device=device)[None], meta)[0, -1:]  # (1, D)
            token = int(view.compute_logits(hidden).argmax(-1))
            ids.append(token)
            if token in stop_ids:
                break
    return ids[len(prompt_ids):]


def base_reference(view: LlamaForCausalLM, ref: GateReference, stop_ids: set[int]) -> GateReference:
    """Fill in the base values; ``view`` must carry no deltas."""
    for fact in ref.facts:
        fact.base_greedy = greedy(view, fact.prompt_ids, len(fact.answer_ids) + 8, stop_ids)
    logps = answer_logps(view, ref.facts)
    for fact, lp in zip(ref.facts, logps):
        fact.base_logp = lp
    ref.heldout_base_nll = mean_nll(view, ref.heldout)
    return ref


def answer_logps(view: LlamaForCausalLM, facts: list[ProtectedFact]) -> list[float]:
    with torch.inference_mode():
        out = token_logps(view, [(f.prompt_ids + f.answer_ids, len(f.prompt_ids)) for f in facts])
    return [lp.sum().item() for lp in out]


def greedy_unchanged(view: LlamaForCausalLM, facts: list[ProtectedFact]) -> list[bool]:
    """Whether greedy decoding still gives each fact's base answer (teacher-forced argmax, one forward)."""
    return argmax_matches(view, [(f.prompt_ids + f.base_greedy, len(f.prompt_ids)) for f in facts]) if facts else []


def check(view: LlamaForCausalLM, ref: GateReference, limits: GateLimits,
          pause: Callable[[], None] | None = None) -> dict[str, Any]:
    """The protected-fact and held-out checks of the candidate ``view`` carries; a JSON-able report.

    ``pause`` is called between forward passes (the worker's duty cycle)."""
    pause = pause or (lambda: None)
    pause()
    unchanged = greedy_unchanged(view, ref.facts)
    pause()
    logps = answer_logps(view, ref.facts)
    flipped = [f.question for f, same in zip(ref.facts, unchanged) if not same]
    dropped = [{"question": f.question, "base": round(f.base_logp, 4), "candidate": round(lp, 4)}
               for f, lp in zip(ref.facts, logps) if lp < f.base_logp - limits.logprob_tolerance]
    nll = mean_nll(view, ref.heldout, pause=pause) if ref.heldout else ref.heldout_base_nll
    limit = ref.heldout_base_nll + math.log1p(limits.max_heldout_regression)  # perplexity x (1 + r)
    return {
        "protected_facts": {"count": len(ref.facts), "greedy_changed": flipped, "logprob_dropped": dropped,
                            "worst_logprob_drop": round(max((f.base_logp - lp for f, lp in zip(ref.facts, logps)),
                                                            default=0.0), 4),
                            "tolerance": limits.logprob_tolerance, "passed": not flipped and not dropped},
        "heldout": {"base_nll": round(ref.heldout_base_nll, 5), "candidate_nll": round(nll, 5),
                    "perplexity_ratio": round(math.exp(nll - ref.heldout_base_nll), 5),
                    "max_regression": limits.max_heldout_regression, "passed": nll <= limit},
    }


def target_check(before: float, after: float, held_before: float | None, held_after: float | None) -> dict:
    """The candidate fits its examples better than the parent (on the held-out part when there is one)."""
    report: dict[str, Any] = {"train_before": round(before, 5), "train_after": round(after, 5)}
    if held_before is not None and held_after is not None:
        report.update(heldout_before=round(held_before, 5), heldout_after=round(held_after, 5),
                      passed=held_after < held_before and after < before)
    else:
        report["passed"] = after < before
    return report


def retained_check(view: LlamaForCausalLM, retained: list[Example], parent_kept: int) -> dict[str, Any]:
    """What earlier versions were taught (rehearsed in this task): the candidate must still give at least as
    many of those answers greedily as its parent did."""
    kept = sum(argmax_matches(view, [(e.ids, e.loss_from) for e in retained])) if retained else 0
    return {"count": len(retained), "parent_kept": parent_kept, "kept": kept, "passed": kept >= parent_kept}


def decide(report: dict[str, Any]) -> tuple[bool, str]:
    """Passed, or the first reason it did not (in the order target, retained examples, protected facts,
    held-out text)."""
    target, facts, held = report["target"], report["protected_facts"], report["heldout"]
    if not target["passed"]:
        where = "its held-out examples" if "heldout_after" in target else "its examples"
        return False, f"the candidate does not fit {where} better than its parent"
    retained = report.get("retained")
    if retained is not None and not retained["passed"]:
        return False, (f"the candidate forgets what earlier versions were taught: {retained['kept']} of "
                       f"{retained['count']} taught answers kept, its parent kept {retained['parent_kept']}")
    if facts["greedy_changed"]:
        return False, f"the candidate changes the answer to protected questions: {facts['greedy_changed'][:3]}"
    if facts["logprob_dropped"]:
        worst = facts["logprob_dropped"][0]
        return False, (f"a protected answer's log-probability falls by more than {facts['tolerance']} nats "
                       f"({worst['question']!r}: {worst['base']} -> {worst['candidate']})")
    if not held["passed"]:
        return False, (f"held-out perplexity rises {100 * (held['perplexity_ratio'] - 1):.2f} % above the base "
                       f"model (limit {100 * held['max_regression']:.1f} %)")
    return True, "passed"
