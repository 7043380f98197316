"""Turns a batch of logits into next tokens, honouring each row's own sampling parameters.

All rows are processed together; the only per-row loop is the random draw for seeded requests, which uses
the request's own generator so its output does not depend on what else is in the batch. Sampling uses the
exponential-race form of the categorical draw (argmax of p / E, E ~ Exp(1)).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from aphrodite.engine.sequence import Sequence, TopLogprobs


@dataclass
class SampleResult:
    """Per row: the chosen token, its log-probability, and the top-N alternatives if asked for."""

    token_ids: list[int]
    logprobs: list[float] | None
    top_logprobs: list[TopLogprobs | None]


def _apply_penalties(logits: torch.Tensor, seqs: list[Sequence]) -> torch.Tensor:
    B, V = logits.shape
    counts = torch.zeros(B, V, dtype=logits.dtype)
    seen_prompt = torch.zeros(B, V, dtype=torch.bool)
    for i, seq in enumerate(seqs):
        if seq.output_token_ids:
            ids = torch.tensor(seq.output_token_ids)
            counts[i].scatter_add_(0, ids, torch.ones(len(ids), dtype=logits.dtype))
        if seq.params.repetition_penalty != 1.0:
            seen_prompt[i, torch.tensor(seq.prompt_token_ids)] = True
    presence = torch.tensor([s.params.presence_penalty for s in seqs], dtype=logits.dtype)[:, None]
    frequency = torch.tensor([s.params.frequency_penalty for s in seqs], dtype=logits.dtype)[:, None]
    rep = torch.tensor([s.params.repetition_penalty for s in seqs], dtype=logits.dtype)[:, None]
    seen = seen_prompt | (counts > 0)
    logits = torch.where(seen & (logits > 0), logits / rep, torch.where(seen, logits * rep, logits))
    return logits - frequency * counts - presence * (counts > 0).to(logits.dtype)


def _top_k_top_p(logits: torch.Tensor, seqs: list[Sequence]) -> torch.Tensor:
    V = logits.shape[1]
    top_k = torch.tensor([s.params.top_k if s.params.top_k > 0 else V for s in seqs])
    top_p = torch.tensor([s.params.top_p for s in seqs], dtype=logits.dtype)
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    ranks = torch.arange(V)[None, :]
    drop = ranks >= top_k[:, None]
    probs = sorted_logits.softmax(-1)
    drop |= (probs.cumsum(-1) - probs) >= top_p[:, None]  # keep the smallest prefix reaching top_p
    sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
    return torch.empty_like(logits).scatter_(1, order, sorted_logits)


# Candidates kept for top-k / top-p: an LM's top 256 tokens nearly always hold the top-p mass, so a partial
# top-k replaces the full-vocabulary sort; rows where they do not fall back to the exact full sort.
_CANDIDATES = 256


def _draw(weights: torch.Tensor, seqs: list[Sequence], index: torch.Tensor | None, vocab: int) -> torch.Tensor:
    """argmax(w / E), E ~ Exp(1): a categorical draw per row. Seeded rows draw E over the whole vocabulary
    from their own generator, so their result does not depend on the batch or on the candidate path."""
    noise = torch.empty_like(weights).exponential_()
    for i, seq in enumerate(seqs):
        if seq.generator is not None and not seq.params.greedy:
            full = torch.empty(vocab).exponential_(generator=seq.generator)
            noise[i] = full if index is None else full[index[i]]
    return (weights / noise).argmax(-1)


def _sample_candidates(scaled: torch.Tensor, seqs: list[Sequence]) -> torch.Tensor | None:
    """Top-k / top-p sampling over the top candidates; None if some row needs more than them."""
    B, V = scaled.shape
    k = min(V, _CANDIDATES)
    top_k = torch.tensor([s.params.top_k if s.params.top_k > 0 else V for s in seqs])
    top_p = torch.tensor([s.params.top_p for s in seqs], dtype=scaled.dtype)
    values, index = scaled.topk(k, dim=-1)  # sorted, descending
    probs = (values - scaled.logsumexp(-1, keepdim=True)).exp()  # true probabilities of the candidates
    covered = (top_k <= k) | (probs.sum(-1) >= top_p)
    if not bool(covered.all()):
        return None
    ranks = torch.arange(k)[None, :]
    drop = (ranks >= top_k[:, None]) | ((probs.cumsum(-1) - probs) >= top_p[:, None])
    chosen = _draw(probs.masked_fill(drop, 0.0), seqs, index, V)
    return index.gather(1, chosen[:, None]).squeeze(1)


def sample(logits: torch.Tensor, seqs: list[Sequence]) -> SampleResult:
    """logits (B, V) float32 on the model's device -> one token per row."""
    logits = logits.float().cpu()
    if any(s.params.needs_penalties for s in seqs):
        logits = _apply_penalties(logits, seqs)
    want_logprobs = any(s.params.logprobs is not None for s in seqs)
    raw_logprobs = logits.log_softmax(-1) if want_logprobs else None

    greedy = torch.tensor([s.params.greedy for s in seqs])
    token_ids = logits.argmax(-1)
    if not bool(greedy.all()):
        temps = torch.tensor([1.0 if s.params.greedy else s.params.temperature for s in seqs])[:, None]
        scaled = logits / temps
        drawn = None
        if all(s.params.top_k > 0 or s.params.top_p < 1.0 for s in seqs):
            drawn = _sample_candidates(scaled, seqs)
        if drawn is None:
            if any(s.params.top_k > 0 or s.params.top_p < 1.0 for s in seqs):
                scaled = _top_k_top_p(scaled, seqs)
            drawn = _draw(scaled.softmax(-1), seqs, None, scaled.shape[1])
        token_ids = torch.where(greedy, token_ids, drawn)

    ids = token_ids.tolist()
    if raw_logprobs is None:
        return SampleResult(ids, None, [None] * len(seqs))
    chosen = raw_logprobs.gather(1, token_ids[:, None]).squeeze(1).tolist()
    k = max(s.params.logprobs or 0 for s in seqs)
    tops: list[TopLogprobs | None] = [None] * len(seqs)
    if k:
        values, indices = raw_logprobs.topk(k, dim=-1)
        for i, seq in enumerate(seqs):
            n = seq.params.logprobs or 0
            tops[i] = dict(zip(indices[i, :n].tolist(), values[i, :n].tolist()))
    return SampleResult(ids, chosen, tops)


def prompt_logprobs(logits: torch.Tensor, prompt_ids: list[int], top_n: int) -> list[TopLogprobs | None]:
    """logits (T, V) for a prompt's positions -> per prompt token its log-probability (+ top-N); first is None."""
    lp = logits[:-1].float().log_softmax(-1)  # row t predicts token t + 1
    targets = torch.tensor(prompt_ids[1:], device=lp.device)
    chosen = lp.gather(1, targets[:, None]).squeeze(1).tolist()
    out: list[TopLogprobs | None] = [None]
    top_v = top_i = None
    if top_n:
        top_v, top_i = lp.topk(top_n, dim=-1)
        top_v, top_i = top_v.tolist(), top_i.tolist()
    for t, tok in enumerate(prompt_ids[1:]):
        entry = {tok: chosen[t]}
        if top_n:
            entry.update(zip(top_i[t], top_v[t]))
            entry[tok] = chosen[t]
        out.append(entry)
    return out
