"""The KV-cache blocks themselves: reference counts, the prefix-cache hash table and the LRU free queue.

A full block whose keys and values were computed by one weight version is registered under a hash of
(the hash of the block before it, that version, its token ids), so the hash names the whole prefix up to and
including the block, under that version. Another sequence with the same prefix and version reuses the block
(its reference count goes up) instead of recomputing it; a sequence admitted under another version computes
different hashes and can never see it.

A block whose count drops to 0 goes to the free queue but keeps its hash: it stays reusable until a fresh block
is needed and it is the least recently freed one (vLLM v1's ``BlockPool``). Blocks without a hash are handed out
before any cached one. Block 0 is the null block and is never handed out.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence as Seq


def block_hash(parent: bytes | None, version: int, token_ids: Seq[int]) -> bytes:
    """The prefix hash of a full block: chains the previous block's hash, the weight version and the tokens.

    SHA-256 rather than Python's ``hash``: a collision would serve another prompt's keys and values."""
    h = hashlib.sha256(parent or b"")
    h.update(version.to_bytes(8, "little", signed=True))
    h.update(b"".join(t.to_bytes(4, "little") for t in token_ids))
    return h.digest()


class BlockPool:
    """Reference-counted blocks; free ones in LRU order, cached ones findable by prefix hash."""

    def __init__(self, num_blocks: int) -> None:
        self.num_blocks = num_blocks
        self._ref = [0] * num_blocks
        # free blocks, popped from the front: uncached ones are put at the front, cached ones at the back
        self._free: OrderedDict[int, None] = OrderedDict((b, None) for b in range(1, num_blocks))
        self._hash_of: dict[int, bytes] = {}
        self._block_of: dict[bytes, int] = {}
        self.num_evictions = 0

    @property
    def num_free(self) -> int:
        """Blocks with no user (cached or not): what a new allocation can take."""
        return len(self._free)

    @property
    def num_cached(self) -> int:
        return len(self._block_of)

    def ref_count(self, block: int) -> int:
        return self._ref[block]

    def lookup(self, h: bytes) -> int | None:
        """The block registered under prefix hash ``h``, in use or free, or None."""
        return self._block_of.get(h)

    def hash_of(self, block: int) -> bytes | None:
        return self._hash_of.get(block)

    def touch(self, block: int) -> None:
        """Take one more reference to a cached block (taking it off the free queue if it had no user)."""
        if self._ref[block] == 0:
            del self._free[block]
        self._ref[block] += 1

    def allocate(self) -> int:
        """A fresh block with one reference; evicts the least recently freed cached block if it must."""
        block, _ = self._free.popitem(last=False)
        h = self._hash_of.pop(block, None)
        if h is not None:
            del self._block_of[h]
            self.num_evictions += 1
        self._ref[block] = 1
        return block

    def release(self, block: int) -> None:
        """Drop one reference; at 0 the block is free (and, if cached, still findable until evicted)."""
        self._ref[block] -= 1
        assert self._ref[block] >= 0, f"block {block} released more often than taken"
        if self._ref[block] == 0:
            self._free[block] = None
            if block not in self._hash_of:
                self._free.move_to_end(block, last=False)

    def register(self, block: int, h: bytes) -> bool:
        """Make a full, computed block findable under ``h``; False if another block already holds that prefix
        (both computed it in the same step) or the block already has a hash."""
        if h in self._block_of or block in self._hash_of:
            return False
        self._block_of[h] = block
        self._hash_of[block] = h
        return True
