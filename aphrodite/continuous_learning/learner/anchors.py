"""Anchors: the base model's own samples, on which training keeps the candidate's next-token distributions
close to the base model's (a KL penalty), so that learning a few examples does not drift on everything else.

The samples need no data: they are drawn once per process from the base model (temperature 1, from its BOS
token), so they follow what the model was trained on. For each position we keep the base model's top-``k``
log-probabilities and the mass of the rest, and the penalty is the exact KL divergence between the base and
candidate distributions coarse-grained to those k + 1 bins (a lower bound on the full KL, and small enough to
ship with a job whatever the vocabulary size).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from aphrodite.modeling.attention import AttentionMetadata
from aphrodite.modeling.llama import LlamaForCausalLM


@dataclass
class Anchor:
    """One sample and the base model's distributions along it."""

    ids: list[int]
    top_ids: torch.Tensor
    """(T-1, k) token ids of the base model's k likeliest next tokens at each position."""
    top_logps: torch.Tensor
    """(T-1, k) their base log-probabilities."""


def self_samples(view: LlamaForCausalLM, start: list[int], n: int, length: int, seed: int = 0) -> list[list[int]]:
    """``n`` samples of ``length`` tokens at temperature 1 from ``view`` (no cache: short and done once); half
    start from ``start``, half from ``start`` and one random token, for variety beyond the model's favourite
    kind of text."""
    gen = torch.Generator().manual_seed(seed)
    device = next(view.parameters()).device
    vocab = view.config.vocab_size
    seqs = torch.tensor([start + [int(torch.randint(vocab, (1,), generator=gen)) if i % 2 else start[-1]]
                         for i in range(n)], device=device)  # (n, T)
    with torch.inference_mode():
        for _ in range(length):
            T = seqs.shape[1]
            meta = AttentionMetadata(True, AttentionMetadata.causal([T] * n, T, device))
            hidden = view(seqs, torch.arange(T, device=device)[None].expand(n, T), meta)[:, -1]  # (n, D)
            probs = view.compute_logits(hidden).softmax(-1)  # (n, V)
            seqs = torch.cat([seqs, torch.multinomial(probs.cpu(), 1, generator=gen).to(device)], 1)
    return seqs.tolist()


def make_anchors(view: LlamaForCausalLM, start: list[int], n: int = 32, length: int = 48, k: int = 256,
                 seed: int = 0) -> list[Anchor]:
    """Sample ``n`` anchors from ``view`` (which must carry no deltas) and record its top-``k`` distributions."""
    from aphrodite.continuous_learning.learner.trainer import scored_logits

    samples = self_samples(view, start, n, length, seed)
    with torch.inference_mode():
        logits = scored_logits(view, [(s, 1) for s in samples])
    anchors = []
    for s, lg in zip(samples, logits):
        top = lg.log_softmax(-1).topk(min(k, lg.shape[-1]), -1)
        anchors.append(Anchor(s, top.indices.cpu(), top.values.cpu()))
    return anchors


def anchor_kl(view: LlamaForCausalLM, anchors: list[Anchor]) -> torch.Tensor:
    """Mean over anchor positions of KL(base || candidate) over the base top-k tokens plus one bin for the rest."""
    from aphrodite.continuous_learning.learner.trainer import scored_logits

    logits = scored_logits(view, [(a.ids, 1) for a in anchors])
    total, count = logits[0].new_zeros(()), 0
    for a, lg in zip(anchors, logits):
        cand = lg.log_softmax(-1).gather(1, a.top_ids.to(lg.device))  # (T-1, k)
        base = a.top_logps.to(lg.device)
        base_rest = torch.log1p(-base.exp().sum(-1).clamp(max=1 - 1e-6))  # (T-1,)
        cand_rest = torch.log1p(-cand.exp().sum(-1).clamp(max=1 - 1e-6))
        kl = (base.exp() * (base - cand)).sum(-1) + base_rest.exp() * (base_rest - cand_rest)
        total, count = total + kl.sum(), count + kl.numel()
    return total / max(1, count)
