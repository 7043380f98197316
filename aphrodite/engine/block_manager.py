"""Hands out fixed-size KV-cache blocks to sequences (vLLM's paged cache), sharing cached prefixes.

With prefix caching on, admitting a sequence first looks up its full prompt blocks by prefix hash (see
``block_pool``) under the sequence's weight version; the blocks found are shared (reference-counted) and their
tokens are not computed again. The lookup stops one token short of the end, so the prefill always computes at
least the last token and there are logits to sample from. Requests that want prompt log-probabilities skip the
lookup (they need every prompt position's logits), but their blocks are still cached for others. After each
step ``commit`` registers the blocks that became full, so later requests (and this one after a preemption)
can reuse them. Block 0 is the null block: padding positions write there and nothing ever reads it unmasked.
"""

from __future__ import annotations

from aphrodite.engine.block_pool import BlockPool, block_hash
from aphrodite.engine.sequence import Sequence


class BlockManager:
    """Block tables of sequences over a shared, reference-counted block pool."""

    def __init__(self, num_blocks: int, block_size: int, watermark_blocks: int = 1,
                 enable_prefix_caching: bool = False) -> None:
        if num_blocks < 2:
            raise ValueError("the KV cache needs at least 2 blocks (one is the null block)")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.watermark = watermark_blocks
        self.enable_prefix_caching = enable_prefix_caching
        self.pool = BlockPool(num_blocks)
        self.prefix_queries = 0
        """Tokens of admitted sequences that were looked up in the prefix cache."""
        self.prefix_hits = 0
        """Of those, tokens found cached (not computed again)."""

    @property
    def num_free_blocks(self) -> int:
        """Blocks no sequence uses (including cached ones that may be evicted)."""
        return self.pool.num_free

    @property
    def capacity_tokens(self) -> int:
        return (self.num_blocks - 1) * self.block_size

    @property
    def prefix_hit_rate(self) -> float:
        return self.prefix_hits / self.prefix_queries if self.prefix_queries else 0.0

    def blocks_for(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    def _cached_prefix(self, seq: Sequence) -> tuple[list[int], list[bytes]]:
        """The longest run of cached full blocks at the start of ``seq``, leaving its last token uncached."""
        if not self.enable_prefix_caching or seq.wants_prompt_logprobs or seq.weight_version is None:
            return [], []
        bs, tokens = self.block_size, seq.all_token_ids
        blocks: list[int] = []
        hashes: list[bytes] = []
        for i in range((seq.num_tokens - 1) // bs):
            h = block_hash(hashes[-1] if hashes else None, seq.weight_version, tokens[i * bs:(i + 1) * bs])
            block = self.pool.lookup(h)
            if block is None:
                break
            blocks.append(block)
            hashes.append(h)
        return blocks, hashes

    def allocate(self, seq: Sequence) -> bool:
        """Give ``seq`` blocks for all its tokens, sharing its cached prefix; False (and nothing taken) if that
        would leave fewer than the watermark's free blocks for running sequences to grow into."""
        assert not seq.block_table
        hit, hashes = self._cached_prefix(seq)
        fresh = self.blocks_for(seq.num_tokens) - len(hit)
        revived = sum(1 for b in hit if self.pool.ref_count(b) == 0)  # cached but free: leaves the free queue
        if fresh + revived + self.watermark > self.pool.num_free:
            return False
        for b in hit:
            self.pool.touch(b)
        seq.block_table = hit + [self.pool.allocate() for _ in range(fresh)]
        seq.block_hashes = hashes
        seq.num_computed_tokens = len(hit) * self.block_size
        if self.enable_prefix_caching and not seq.wants_prompt_logprobs:
            self.prefix_queries += seq.num_tokens
            self.prefix_hits += seq.num_computed_tokens
        return True

    def can_append(self, seq: Sequence) -> bool:
        """Whether the sequence's next token (at position num_tokens - 1 once fed) has a slot."""
        return len(seq.block_table) * self.block_size >= seq.num_tokens or self.pool.num_free > 0

    def append_slot(self, seq: Sequence) -> None:
        if len(seq.block_table) * self.block_size < seq.num_tokens:
            seq.block_table.append(self.pool.allocate())

    def commit(self, seq: Sequence, num_computed: int, version: int) -> None:
        """Record that ``seq``'s first ``num_computed`` tokens are in the cache, computed by weight ``version``,
        and make its newly full blocks findable by prefix hash (only under the version it was admitted with)."""
        seq.num_computed_tokens = num_computed
        if not self.enable_prefix_caching or seq.block_hashes is None:
            return
        if version != seq.weight_version:
            seq.block_hashes = None  # a swap reached this sequence: its later blocks mix versions
            return
        bs, full = self.block_size, num_computed // self.block_size
        if len(seq.block_hashes) >= full:
            return
        tokens = seq.all_token_ids
        for i in range(len(seq.block_hashes), full):
            h = block_hash(seq.block_hashes[-1] if seq.block_hashes else None, version, tokens[i * bs:(i + 1) * bs])
            self.pool.register(seq.block_table[i], h)
            seq.block_hashes.append(h)

    def free(self, seq: Sequence) -> None:
        """Drop the sequence's references; its cached blocks stay findable until evicted. The tail goes first
        into the free queue, so it is evicted before the prefix that other prompts are likelier to share."""
        for b in reversed(seq.block_table):
            self.pool.release(b)
        seq.block_table = []
        seq.block_hashes = []
        seq.num_computed_tokens = 0

    def slot(self, seq: Sequence, position: int) -> int:
        return seq.block_table[position // self.block_size] * self.block_size + position % self.block_size
