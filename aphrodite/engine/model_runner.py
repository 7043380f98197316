"""Runs one scheduled batch through the model: builds tensors, owns the KV cache, samples.

It never sees the scheduler; it gets a list of sequences, whether they are a prefill or decode batch and, for a
prefill, how many tokens each row computes (a chunk, after what is already cached).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from aphrodite.engine.block_manager import BlockManager
from aphrodite.engine.sampler import SampleResult, prompt_logprobs, sample
from aphrodite.engine.sequence import Sequence, TopLogprobs
from aphrodite.modeling.attention import AttentionMetadata
from aphrodite.modeling.llama import LlamaForCausalLM


@dataclass
class StepResult:
    """What one forward pass produced for each scheduled sequence."""

    samples: SampleResult
    """One entry per sampled row, in the order of ``sampled_rows``."""
    sampled_rows: list[int]
    """Rows that produced a token: every decode row, and prefill rows whose chunk reached the last token."""
    prompt_logprobs: dict[int, list[TopLogprobs | None]]
    """Row index -> prompt log-probabilities, for the rows that asked."""
    hidden_states: dict[int, torch.Tensor]
    """Row index -> projected final hidden state (d,) of the position sampled from, for the rows that asked."""


def kv_bytes_per_token(model: LlamaForCausalLM) -> int:
    cfg = model.config
    elem = next(model.parameters()).element_size()
    return 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * cfg.head_dim * elem


class ModelRunner:
    """Model + paged KV cache + sampler on one device."""

    def __init__(self, model: LlamaForCausalLM, block_manager: BlockManager,
                 hidden_state_dim: int | None = None, seed: int = 0) -> None:
        self.model = model
        self.blocks = block_manager
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype
        cfg = model.config
        slots = block_manager.num_blocks * block_manager.block_size
        shape = (slots, cfg.num_key_value_heads, cfg.head_dim)
        self.kv_caches = [(torch.zeros(shape, dtype=self.dtype, device=self.device),
                           torch.zeros(shape, dtype=self.dtype, device=self.device))
                          for _ in range(cfg.num_hidden_layers)]
        self.bind_adapters: Callable[[list[Sequence]], None] = lambda seqs: None
        """Tells the LoRA-capable layers each row's delta slot (``WeightVersions.bind``); one row per sequence."""
        self.projection: torch.Tensor | None = None
        if hidden_state_dim:
            gen = torch.Generator().manual_seed(seed)
            # fixed random projection (D, d): preserves distances in expectation (Johnson-Lindenstrauss)
            proj = torch.randn(cfg.hidden_size, hidden_state_dim, generator=gen) / hidden_state_dim ** 0.5
            self.projection = proj.to(self.device)

    @torch.inference_mode()
    def execute(self, seqs: list[Sequence], is_prefill: bool, num_new_tokens: list[int] | None = None) -> StepResult:
        """Run one batch; a prefill row computes ``num_new_tokens[i]`` tokens from its ``num_computed_tokens``
        on (default: all it has left) and is sampled only if that reaches its last token."""
        self.bind_adapters(seqs)
        if is_prefill:
            num_new = num_new_tokens or [s.num_tokens - s.num_computed_tokens for s in seqs]
            hidden = self._prefill(seqs, num_new)  # (B, L, D)
            picked = [i for i, s in enumerate(seqs) if s.num_computed_tokens + num_new[i] == s.num_tokens]
            last = torch.tensor([num_new[i] - 1 for i in picked], dtype=torch.long, device=self.device)
            rows = hidden[torch.tensor(picked, dtype=torch.long, device=self.device), last]  # (b, D)
        else:
            hidden = self._decode(seqs)  # (B, 1, D)
            rows = hidden[:, 0]
            picked = list(range(len(seqs)))
        samples = sample(self.model.compute_logits(rows), [seqs[i] for i in picked]) if picked \
            else SampleResult([], [], [])  # (b, V) logits; no row reached its prompt's end this step
        plp: dict[int, list[TopLogprobs | None]] = {}
        if is_prefill:
            for i, seq in enumerate(seqs):
                if seq.wants_prompt_logprobs:  # never chunked nor served from the prefix cache: row i is the prompt
                    n = len(seq.prompt_token_ids)
                    self.bind_adapters([seq])  # the rows below are this sequence's tokens
                    plp[i] = prompt_logprobs(self.model.compute_logits(hidden[i, :n]), seq.prompt_token_ids,
                                             seq.params.prompt_logprobs or 0)
        hs: dict[int, torch.Tensor] = {}
        wanted = [j for j, i in enumerate(picked) if seqs[i].params.return_hidden_states]
        if wanted:
            vecs = rows[wanted].float()
            if self.projection is not None:
                vecs = vecs @ self.projection
            hs = dict(zip((picked[j] for j in wanted), vecs.cpu()))
        return StepResult(samples, picked, plp, hs)

    def _prefill(self, seqs: list[Sequence], num_new: list[int]) -> torch.Tensor:
        """Compute each row's next ``num_new[i]`` tokens; a row that starts after a cached prefix or an earlier
        chunk attends to that context through its block table."""
        starts = [s.num_computed_tokens for s in seqs]
        L = max(num_new)
        ids = torch.zeros(len(seqs), L, dtype=torch.long)
        slots = torch.zeros(len(seqs), L, dtype=torch.long)  # padding -> slot 0 of the null block
        positions = torch.zeros(len(seqs), L, dtype=torch.long)  # padding -> position 0
        bs = self.blocks.block_size
        for i, seq in enumerate(seqs):
            c, n = starts[i], num_new[i]
            ids[i, :n] = torch.tensor(seq.all_token_ids[c:c + n])
            table = torch.tensor(seq.block_table)
            pos = torch.arange(c, c + n)
            positions[i, :n] = pos
            slots[i, :n] = table[pos // bs] * bs + pos % bs
        if not any(starts):
            meta = AttentionMetadata(True, AttentionMetadata.causal(num_new, L, self.device),
                                     slot_mapping=slots.view(-1).to(self.device))
        else:
            start_t, new_t = torch.tensor(starts), torch.tensor(num_new)
            S = int((start_t + new_t).max())
            gather = self._context_slots(seqs, S)
            meta = AttentionMetadata(True, AttentionMetadata.extend(start_t, new_t, L, S).to(self.device),
                                     slot_mapping=slots.view(-1).to(self.device), gather_index=gather.to(self.device))
        return self.model(ids.to(self.device), positions.to(self.device), meta, self.kv_caches)

    def _context_slots(self, seqs: list[Sequence], S: int) -> torch.Tensor:
        """(B, S) flat cache slots of each row's first S positions (slot 0 past its block table)."""
        bs = self.blocks.block_size
        tables = torch.zeros(len(seqs), -(-S // bs), dtype=torch.long)
        for i, seq in enumerate(seqs):
            table = seq.block_table[:tables.shape[1]]
            tables[i, :len(table)] = torch.tensor(table)
        return (tables[:, :, None] * bs + torch.arange(bs)).view(len(seqs), -1)[:, :S]

    def _decode(self, seqs: list[Sequence]) -> torch.Tensor:
        bs = self.blocks.block_size
        ctx = torch.tensor([s.num_tokens for s in seqs])  # context incl. the token fed now
        max_blocks = max(len(s.block_table) for s in seqs)
        tables = torch.zeros(len(seqs), max_blocks, dtype=torch.long)
        for i, seq in enumerate(seqs):
            tables[i, :len(seq.block_table)] = torch.tensor(seq.block_table)
        S = int(ctx.max())
        gather = (tables[:, :, None] * bs + torch.arange(bs)).view(len(seqs), -1)[:, :S]  # (B, S)
        positions = (ctx - 1)[:, None]  # (B, 1)
        slot_mapping = gather.gather(1, positions).view(-1)
        mask = (torch.arange(S)[None, :] < ctx[:, None])[:, None, None, :]  # (B, 1, 1, S)
        ids = torch.tensor([s.last_token_id for s in seqs])[:, None]
        meta = AttentionMetadata(False, mask.to(self.device), slot_mapping=slot_mapping.to(self.device),
                                 gather_index=gather.to(self.device))
        return self.model(ids.to(self.device), positions.to(self.device), meta, self.kv_caches)
