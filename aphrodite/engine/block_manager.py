"""Hands out fixed-size KV-cache blocks to sequences (vLLM's paged cache, without prefix sharing).

Block 0 is the null block: padding positions write there and nothing ever reads it unmasked.
"""

from __future__ import annotations

from collections import deque

from aphrodite.engine.sequence import Sequence


class BlockManager:
    """A free list of block ids and the arithmetic from positions to slots."""

    def __init__(self, num_blocks: int, block_size: int, watermark_blocks: int = 1) -> None:
        if num_blocks < 2:
            raise ValueError("the KV cache needs at least 2 blocks (one is the null block)")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.watermark = watermark_blocks
        self._free: deque[int] = deque(range(1, num_blocks))

    @property
    def num_free_blocks(self) -> int:
        return len(self._free)

    @property
    def capacity_tokens(self) -> int:
        return (self.num_blocks - 1) * self.block_size

    def blocks_for(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    def can_allocate(self, seq: Sequence) -> bool:
        """Room for the whole sequence, keeping a watermark for the running ones to grow into."""
        return self.blocks_for(seq.num_tokens) + self.watermark <= len(self._free)

    def allocate(self, seq: Sequence) -> None:
        assert not seq.block_table
        seq.block_table = [self._free.popleft() for _ in range(self.blocks_for(seq.num_tokens))]

    def can_append(self, seq: Sequence) -> bool:
        """Whether the sequence's next token (at position num_tokens - 1 once fed) has a slot."""
        return len(seq.block_table) * self.block_size >= seq.num_tokens or bool(self._free)

    def append_slot(self, seq: Sequence) -> None:
        if len(seq.block_table) * self.block_size < seq.num_tokens:
            seq.block_table.append(self._free.popleft())

    def free(self, seq: Sequence) -> None:
        self._free.extend(seq.block_table)
        seq.block_table = []

    def slot(self, seq: Sequence, position: int) -> int:
        return seq.block_table[position // self.block_size] * self.block_size + position % self.block_size
