"""Runs one scheduled batch through the model: builds tensors, owns the KV cache, samples.

It never sees the scheduler; it gets a list of sequences and whether they are a prefill or decode batch.
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
    def execute(self, seqs: list[Sequence], is_prefill: bool) -> StepResult:
        self.bind_adapters(seqs)
        if is_prefill:
            hidden, last = self._prefill(seqs)  # hidden (B, L, D); last (B,) index of each row's final token
            rows = hidden[torch.arange(len(seqs), device=self.device), last]  # (B, D)
        else:
            hidden = self._decode(seqs)  # (B, 1, D)
            rows = hidden[:, 0]
        logits = self.model.compute_logits(rows)  # (B, V)
        samples = sample(logits, seqs)
        plp: dict[int, list[TopLogprobs | None]] = {}
        if is_prefill:
            for i, seq in enumerate(seqs):
                if seq.wants_prompt_logprobs:
                    n = len(seq.prompt_token_ids)
                    self.bind_adapters([seq])  # the rows below are this sequence's tokens
                    plp[i] = prompt_logprobs(self.model.compute_logits(hidden[i, :n]), seq.prompt_token_ids,
                                             seq.params.prompt_logprobs or 0)
        hs: dict[int, torch.Tensor] = {}
        wanted = [i for i, s in enumerate(seqs) if s.params.return_hidden_states]
        if wanted:
            picked = rows[wanted].float()
            if self.projection is not None:
                picked = picked @ self.projection
            hs = dict(zip(wanted, picked.cpu()))
        return StepResult(samples, plp, hs)

    def _prefill(self, seqs: list[Sequence]) -> tuple[torch.Tensor, torch.Tensor]:
        lens = [s.num_tokens for s in seqs]
        L = max(lens)
        ids = torch.zeros(len(seqs), L, dtype=torch.long)
        slots = torch.zeros(len(seqs), L, dtype=torch.long)  # padding -> slot 0 of the null block
        bs = self.blocks.block_size
        for i, seq in enumerate(seqs):
            n = lens[i]
            ids[i, :n] = torch.tensor(seq.all_token_ids)
            table = torch.tensor(seq.block_table)
            pos = torch.arange(n)
            slots[i, :n] = table[pos // bs] * bs + pos % bs
        positions = torch.arange(L).expand(len(seqs), L)
        meta = AttentionMetadata(True, AttentionMetadata.causal(lens, L, self.device),
                                 slot_mapping=slots.view(-1).to(self.device))
        hidden = self.model(ids.to(self.device), positions.to(self.device), meta, self.kv_caches)
        return hidden, torch.tensor(lens, device=self.device) - 1

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
