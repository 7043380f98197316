"""Train low-rank deltas on the served model's base weights, without copying them and without touching the
layers that serve requests.

``trainable_view`` clones the module tree but shares every parameter and buffer with the served model, so
the clone costs only its module objects; its ``LoRACapableLinear`` layers carry the candidate deltas while
the served layers keep the deltas of the version in service. Base weights are never written.

The objective is supervised NLL on the targets plus ``kto_weight`` times the KTO loss (Ethayarajh et al. 2024,
as formulated in TRL's ``KTOTrainer``) on rated completions, against the parent version as reference.
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass
from typing import Callable

import torch

from aphrodite.continuous_learning.learner.anchors import Anchor, anchor_kl
from aphrodite.engine.weights import LoRADelta
from aphrodite.modeling.attention import AttentionMetadata
from aphrodite.modeling.llama import LlamaForCausalLM


@dataclass
class Example:
    """Token ids of one training or evaluation text and which positions count in the loss."""

    ids: list[int]
    loss_from: int
    """Index of the first token whose prediction is scored (the prompt before it is context only)."""

    @property
    def scored(self) -> int:
        return len(self.ids) - self.loss_from


@dataclass
class RatedExample:
    """A completion a user rated: ``desirable`` (positive rating) or undesirable (negative), for KTO."""

    ids: list[int]
    loss_from: int
    desirable: bool


@dataclass
class Objective:
    """What one optimizer step minimises and how."""

    lr: float
    steps: int
    stop_loss: float = 0.0
    """Stop early once the supervised loss on ``stop_on`` is below this (mean nats per target token)."""
    kto_weight: float = 1.0
    kto_beta: float = 0.1
    desirable_weight: float = 1.0
    undesirable_weight: float = 1.0
    batch_size: int = 16
    """Supervised examples per step (a fresh shuffle each pass); the rated set is used whole each step."""
    anchor_weight: float = 1.0
    """Weight of the KL(base || candidate) penalty on the anchor texts (the base model's own samples)."""
    anchors_per_step: int = 8
    check_every: int = 5
    """Steps between two checks of the stopping rule (each costs two forward passes over the targets)."""


def trainable_view(model: LlamaForCausalLM) -> LlamaForCausalLM:
    """A clone sharing all weights with ``model`` (the memo maps each tensor to itself)."""
    memo = {id(t): t for t in [*model.parameters(), *model.buffers()]}
    view = copy.deepcopy(model, memo)
    for layer in view.lora_targets().values():
        layer.clear_lora()
    return view


def default_targets(model: LlamaForCausalLM) -> list[str]:
    """The attention and MLP projections of every layer (not the LM head, which is tied on small models)."""
    return [name for name in model.lora_targets() if name.startswith("layers.")]


def attach(view: LlamaForCausalLM, deltas: dict[str, LoRADelta]) -> None:
    targets = view.lora_targets()
    for layer in targets.values():
        layer.clear_lora()
    for name, d in deltas.items():
        targets[name].set_lora(d.a, d.b, d.scale)


def scored_logits(view: LlamaForCausalLM, seqs: list[tuple[list[int], int]]) -> list[torch.Tensor]:
    """Logits predicting each sequence's scored tokens (``ids[loss_from:]``), from one right-padded forward.

    ``seqs`` holds (ids, loss_from) pairs; returns one (len(ids) - loss_from, V) tensor per sequence.
    """
    if not seqs:
        return []
    device = next(view.parameters()).device
    lens = [len(ids) for ids, _ in seqs]
    T = max(lens)
    ids = torch.zeros(len(seqs), T, dtype=torch.long, device=device)  # (B, T), padded with 0
    for row, (s, _) in enumerate(seqs):
        ids[row, :len(s)] = torch.tensor(s, device=device)
    positions = torch.arange(T, device=device)[None].expand(len(seqs), T)
    meta = AttentionMetadata(True, AttentionMetadata.causal(lens, T, device))
    hidden = view(ids, positions, meta)  # (B, T, D)
    return [view.compute_logits(hidden[row, start - 1:len(s) - 1]) for row, (s, start) in enumerate(seqs)]


def token_logps(view: LlamaForCausalLM, seqs: list[tuple[list[int], int]]) -> list[torch.Tensor]:
    """Log-probabilities of each sequence's scored tokens: one 1-D tensor per sequence."""
    out = []
    for (s, start), logits in zip(seqs, scored_logits(view, seqs)):
        target = torch.tensor(s[start:], device=logits.device)[:, None]
        out.append(torch.log_softmax(logits, -1).gather(1, target)[:, 0])
    return out


def sequence_logps(view: LlamaForCausalLM, seqs: list[tuple[list[int], int]]) -> torch.Tensor:
    """(B,) summed log-probability of each sequence's scored tokens."""
    return torch.stack([lp.sum() for lp in token_logps(view, seqs)]) if seqs else torch.zeros(0)


def mean_nll(view: LlamaForCausalLM, examples: list[Example], chunk: int = 8,
             pause: Callable[[], None] | None = None) -> float:
    """Mean negative log-likelihood per scored token, with whatever deltas ``view`` carries.

    Examples go through in chunks of similar length (little padding); ``pause`` is called before each chunk
    (the worker's duty cycle, so a long evaluation yields to serving as training steps do).
    """
    ordered = sorted(examples, key=lambda e: len(e.ids))
    total = 0.0
    with torch.inference_mode():
        for i in range(0, len(ordered), chunk):
            if pause is not None:
                pause()
            total -= sequence_logps(view, [(e.ids, e.loss_from) for e in ordered[i:i + chunk]]).sum().item()
    return total / max(1, sum(e.scored for e in examples))


def kl_pairs(rated: list[RatedExample]) -> list[tuple[list[int], int]]:
    """Mismatched (prompt i, completion i+1) pairs, TRL's way of estimating the KL term; [] below 2 examples."""
    if len(rated) < 2:
        return []
    pairs = []
    for i, ex in enumerate(rated):
        other = rated[(i + 1) % len(rated)]
        pairs.append((ex.ids[:ex.loss_from] + other.ids[other.loss_from:], ex.loss_from))
    return pairs


def kto_loss(policy: torch.Tensor, reference: torch.Tensor, desirable: torch.Tensor, policy_kl: torch.Tensor,
             reference_kl: torch.Tensor, beta: float = 0.1, desirable_weight: float = 1.0,
             undesirable_weight: float = 1.0) -> torch.Tensor:
    """KTO loss (Ethayarajh et al. 2024, eq. 8; TRL's ``KTOTrainer.kto_loss``), the mean over the examples.

    ``policy``/``reference`` (B,) summed completion log-probs, ``desirable`` (B,) bool, ``policy_kl``/
    ``reference_kl`` (K,) log-probs of mismatched pairs. z0 = mean(policy_kl - reference_kl) clamped at 0 and
    detached; desirable: w_d * (1 - sigmoid(beta * (r - z0))), undesirable: w_u * (1 - sigmoid(beta * (z0 - r))),
    with r = policy - reference.
    """
    z0 = (policy_kl - reference_kl).mean().clamp(min=0).detach() if policy_kl.numel() else policy.new_zeros(())
    ratio = policy - reference
    losses = torch.where(desirable, desirable_weight * (1 - torch.sigmoid(beta * (ratio - z0))),
                         undesirable_weight * (1 - torch.sigmoid(beta * (z0 - ratio))))
    return losses.mean()


@dataclass
class Reference:
    """The parent version's log-probs of the rated completions and of their mismatched pairs (computed once)."""

    logps: torch.Tensor
    kl_logps: torch.Tensor


def reference_logps(view: LlamaForCausalLM, rated: list[RatedExample]) -> Reference:
    """Run with the parent's deltas attached to ``view``: the reference comes from the same shared weights."""
    with torch.inference_mode():
        return Reference(sequence_logps(view, [(r.ids, r.loss_from) for r in rated]).clone(),
                         sequence_logps(view, kl_pairs(rated)).clone())


def init_params(view: LlamaForCausalLM, start: dict[str, LoRADelta], targets: list[str], rank: int,
                seed: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Trainable (A, B) per target: a copy of ``start``'s, or fresh A ~ N(0, 1/r), B = 0."""
    gen = torch.Generator().manual_seed(seed)
    layers = view.lora_targets()
    params = {}
    for name in targets:
        layer = layers[name]
        if name in start:
            a, b = start[name].a.clone(), start[name].b.clone()
        else:
            a = torch.randn(rank, layer.in_features, generator=gen) / rank ** 0.5
            b = torch.zeros(layer.out_features, rank)
        w = layer.weight
        params[name] = (a.to(w.device, torch.float32).requires_grad_(), b.to(w.device, torch.float32).requires_grad_())
    return params


def argmax_matches(view: LlamaForCausalLM, seqs: list[tuple[list[int], int]]) -> list[bool]:
    """Whether greedy decoding reproduces each sequence's scored tokens (teacher-forced argmax equals them)."""
    with torch.inference_mode():
        return [bool((logits.argmax(-1) == torch.tensor(s[start:], device=logits.device)).all())
                for (s, start), logits in zip(seqs, scored_logits(view, seqs))]


def learned(view: LlamaForCausalLM, examples: list[Example], max_nll: float) -> bool:
    """Every example's target is the greedy answer and the mean NLL per target token is below ``max_nll``."""
    return all(argmax_matches(view, [(e.ids, e.loss_from) for e in examples])) and \
        mean_nll(view, examples) < max_nll


def sft_loss(view: LlamaForCausalLM, examples: list[Example]) -> torch.Tensor:
    """Mean NLL per target token."""
    logps = sequence_logps(view, [(e.ids, e.loss_from) for e in examples])
    return -logps.sum() / max(1, sum(e.scored for e in examples))


def train_lora(view: LlamaForCausalLM, examples: list[Example], rated: list[RatedExample],
               start: dict[str, LoRADelta], targets: list[str], rank: int, alpha: float, objective: Objective,
               stop_on: list[Example] | None = None, reference: Reference | None = None,
               anchors: list[Anchor] | None = None, seed: int = 0,
               before_step: Callable[[], None] | None = None) -> tuple[dict[str, LoRADelta], list[float], str]:
    """Adam on SFT(examples) + kto_weight * KTO(rated) + anchor_weight * KL(base || candidate) on ``anchors``,
    from ``start`` (or fresh deltas).

    ``reference``: the parent's log-probs of ``rated`` (by default computed from the deltas ``view`` carries on
    entry, which must then be the parent's). ``anchors``: the base model's own samples, on which the candidate's
    next-token distributions are pulled towards the base model's. Stops after ``objective.steps``, or once
    greedy decoding reproduces every ``stop_on`` target and their NLL is below ``objective.stop_loss``.
    Returns (deltas, loss per step, stop reason).
    """
    if rated and reference is None:
        reference = reference_logps(view, rated)
    params = init_params(view, start, targets, rank, seed)
    layers = view.lora_targets()
    scales = {name: start[name].scale if name in start else alpha / rank for name in params}
    for name, (a, b) in params.items():
        layers[name].lora_a, layers[name].lora_b, layers[name].lora_scale = a, b, scales[name]
    optimizer = torch.optim.Adam([t for pair in params.values() for t in pair], lr=objective.lr)
    order, shuffler, losses, reason = [], random.Random(seed), [], "steps"
    for _ in range(objective.steps):
        if before_step is not None:
            before_step()
        if (stop_on and objective.stop_loss > 0 and len(losses) % objective.check_every == 0
                and learned(view, stop_on, objective.stop_loss)):
            reason = "targets learned"
            break
        if len(order) < objective.batch_size:
            order += shuffler.sample(range(len(examples)), len(examples))
        picked, order = [examples[i] for i in order[:objective.batch_size]], order[objective.batch_size:]
        optimizer.zero_grad()
        loss = sft_loss(view, picked) if picked else torch.zeros(())
        if rated and reference is not None:
            loss = loss + objective.kto_weight * _kto_step(view, rated, reference, objective)
        if anchors and objective.anchor_weight > 0:
            k = objective.anchors_per_step
            picked_anchors = [anchors[(len(losses) * k + j) % len(anchors)] for j in range(min(k, len(anchors)))]
            loss = loss + objective.anchor_weight * anchor_kl(view, picked_anchors)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    deltas = {n: LoRADelta(a.detach().clone(), b.detach().clone(), scales[n]) for n, (a, b) in params.items()}
    return deltas, losses, reason


def _kto_step(view: LlamaForCausalLM, rated: list[RatedExample], ref: Reference, objective: Objective) -> torch.Tensor:
    policy = sequence_logps(view, [(r.ids, r.loss_from) for r in rated])
    with torch.no_grad():  # the KL estimate is detached in KTO: no gradient through the mismatched pairs
        policy_kl = sequence_logps(view, kl_pairs(rated))
    desirable = torch.tensor([r.desirable for r in rated], device=policy.device)
    return kto_loss(policy, ref.logps, desirable, policy_kl, ref.kl_logps, objective.kto_beta,
                    objective.desirable_weight, objective.undesirable_weight)

