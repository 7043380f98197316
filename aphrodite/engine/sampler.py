"""Turns a batch of logits into next tokens, honouring each row's own sampling parameters.

All rows are processed together; the only per-row loop is the uniform draw of seeded requests, which uses
the request's own generator so their output does not depend on what else is in the batch. A draw inverts the
CDF (cumsum + searchsorted); top-k masks below each row's k-th probability; top-p samples the nucleus by
rejection instead of sorting the vocabulary (see ``_draw_top_p``). Top-p applies to the top-k-renormalised
distribution, as in vLLM.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from aphrodite.engine.sequence import Sequence, TopLogprobs


@dataclass
class SampleResult:
    """Per row: the chosen token, its log-probability, and the top-N alternatives if asked for."""

    token_ids: list[int]
    logprobs: list[float]
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


def _top_k_mask(probs: torch.Tensor, seqs: list[Sequence]) -> torch.Tensor:
    """Zero every probability below each row's k-th largest (rows with top_k <= 0 untouched)."""
    ks = torch.tensor([s.params.top_k if 0 < s.params.top_k < probs.shape[1] else 0 for s in seqs])
    if not bool((ks > 0).any()):
        return probs
    top = probs.topk(int(ks.max()), dim=-1).values  # (B, kmax), descending
    kth = top.gather(1, (ks.clamp(min=1) - 1)[:, None])  # (B, 1)
    return torch.where((ks[:, None] > 0) & (probs < kth), torch.zeros_like(probs), probs)


def _draw(probs: torch.Tensor, seqs: list[Sequence]) -> torch.Tensor:
    """One categorical draw per row by inverting the CDF (rows need not be normalised). Seeded rows take their
    uniform from their own generator, so their tokens do not depend on what else is in the batch."""
    cdf = probs.cumsum(-1)  # (B, V)
    u = torch.rand(len(seqs))
    for i, seq in enumerate(seqs):
        if seq.generator is not None:
            u[i] = torch.rand(1, generator=seq.generator)
    target = (u * cdf[:, -1])[:, None]
    return torch.searchsorted(cdf, target, right=True).clamp_(max=probs.shape[1] - 1).squeeze(1)


def _draw_top_p(probs: torch.Tensor, seqs: list[Sequence], tries: int = 8) -> torch.Tensor:
    """Sample from the top-p nucleus of each row without sorting the vocabulary.

    Rejection sampling: draw from the whole (top-k-masked) distribution and accept a token when the mass of
    strictly more probable tokens is below top_p, i.e. when it lies in the nucleus. Conditioning on the nucleus
    gives exactly the renormalised nucleus distribution; it is accepted with probability >= top_p per try.
    Rows still rejected after ``tries`` fall back to the exact sort.
    """
    top_p = torch.tensor([s.params.top_p for s in seqs], dtype=probs.dtype)
    total = probs.sum(-1)
    tokens = _draw(probs, seqs)
    rows = torch.arange(len(seqs))
    for _ in range(tries):
        p_tok = probs[rows, tokens[rows]]
        above = (probs[rows] * (probs[rows] > p_tok[:, None])).sum(-1)
        rows = rows[above >= top_p[rows] * total[rows]]
        if rows.numel() == 0:
            return tokens
        tokens[rows] = _draw(probs[rows], [seqs[i] for i in rows.tolist()])
    for i in rows.tolist():  # exact fallback: sort this row
        sorted_p, order = probs[i].sort(descending=True)
        keep = (sorted_p.cumsum(0) - sorted_p) < top_p[i] * total[i]
        nucleus = torch.zeros_like(probs[i]).scatter_(0, order, sorted_p * keep)
        tokens[i] = _draw(nucleus[None], [seqs[i]])[0]
    return tokens


def sample(logits: torch.Tensor, seqs: list[Sequence]) -> SampleResult:
    """logits (B, V) float32 on the model's device -> one token per row."""
    logits = logits.float().cpu()
    if any(s.params.needs_penalties for s in seqs):
        logits = _apply_penalties(logits, seqs)
    lse = logits.logsumexp(-1, keepdim=True)  # (B, 1): log-probabilities are logits - lse

    greedy = torch.tensor([s.params.greedy for s in seqs])
    token_ids = logits.argmax(-1)
    if not bool(greedy.all()):
        temps = torch.tensor([1.0 if s.params.greedy else s.params.temperature for s in seqs])[:, None]
        probs = _top_k_mask((logits / temps).softmax(-1), seqs)  # (B, V)
        if any(s.params.top_p < 1.0 for s in seqs):
            drawn = _draw_top_p(probs, seqs)
        else:
            drawn = _draw(probs, seqs)
        token_ids = torch.where(greedy, token_ids, drawn)

    ids = token_ids.tolist()
    # the sampled token's log-probability is always kept (cheap: one logsumexp); it gives each response a
    # confidence signal whether or not the client asked for logprobs
    chosen = (logits.gather(1, token_ids[:, None]) - lse).squeeze(1).tolist()
    k = max(s.params.logprobs or 0 for s in seqs)
    tops: list[TopLogprobs | None] = [None] * len(seqs)
    if k:
        values, indices = (logits - lse).topk(k, dim=-1)
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
