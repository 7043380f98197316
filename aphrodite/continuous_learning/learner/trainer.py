"""Train low-rank deltas on the served model's base weights, without copying them and without touching the
layers that serve requests.

``trainable_view`` clones the module tree but shares every parameter and buffer with the served model, so
the clone costs only its module objects; its ``LoRACapableLinear`` layers carry the candidate deltas while
the served layers keep the deltas of the version in service. Base weights are never written.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from aphrodite.engine.weights import LoRADelta
from aphrodite.modeling.attention import AttentionMetadata
from aphrodite.modeling.llama import LlamaForCausalLM


@dataclass
class Example:
    """Token ids of one training or evaluation text and which positions count in the loss."""

    ids: list[int]
    loss_from: int
    """Index of the first token whose prediction is scored (the prompt before it is context only)."""


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


def _nll(view: LlamaForCausalLM, ex: Example) -> torch.Tensor:
    ids = torch.tensor([ex.ids], device=next(view.parameters()).device)  # (1, T)
    T = ids.shape[1]
    meta = AttentionMetadata(True, AttentionMetadata.causal([T], T, ids.device))
    hidden = view(ids, torch.arange(T, device=ids.device)[None], meta)[0]  # (T, D)
    logits = view.compute_logits(hidden[ex.loss_from - 1:T - 1])  # predictions of tokens loss_from .. T-1
    return F.cross_entropy(logits, ids[0, ex.loss_from:], reduction="sum")


def mean_nll(view: LlamaForCausalLM, examples: list[Example]) -> float:
    """Mean negative log-likelihood per scored token, with whatever deltas ``view`` carries."""
    with torch.inference_mode():
        total = sum(_nll(view, ex).item() for ex in examples)
    return total / max(1, sum(len(ex.ids) - ex.loss_from for ex in examples))


def train_lora(view: LlamaForCausalLM, examples: list[Example], start: dict[str, LoRADelta], targets: list[str],
               rank: int, alpha: float, lr: float, steps: int, seed: int = 0,
               before_step: Callable[[], None] | None = None) -> dict[str, LoRADelta]:
    """``steps`` full passes of Adam over ``examples``, from ``start`` (or fresh A ~ N(0, 1/r), B = 0).
    ``before_step`` runs before each pass (the learner uses it to yield to serving)."""
    gen = torch.Generator().manual_seed(seed)
    layers = view.lora_targets()
    params: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for name in targets:
        layer = layers[name]
        if name in start:
            a, b = start[name].a.clone(), start[name].b.clone()
        else:
            a = torch.randn(rank, layer.in_features, generator=gen) / rank ** 0.5
            b = torch.zeros(layer.out_features, rank)
        w = layer.weight
        params[name] = (a.to(w.device, torch.float32).requires_grad_(), b.to(w.device, torch.float32).requires_grad_())
    optimizer = torch.optim.Adam([t for pair in params.values() for t in pair], lr=lr)
    scale = alpha / rank
    tokens = max(1, sum(len(ex.ids) - ex.loss_from for ex in examples))
    for _ in range(steps):
        if before_step is not None:
            before_step()
        optimizer.zero_grad()
        for name, (a, b) in params.items():
            layers[name].lora_a, layers[name].lora_b, layers[name].lora_scale = a, b, scale
        loss = sum(_nll(view, ex) for ex in examples) / tokens
        loss.backward()
        optimizer.step()
    return {name: LoRADelta(a.detach().clone(), b.detach().clone(), scale) for name, (a, b) in params.items()}
