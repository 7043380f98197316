"""Engine configuration: one dataclass per concern, each field documented; CLI flags come from these."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class ModelLoadConfig:
    """Which checkpoint to serve, where, and how."""

    model: str | None = None
    """Hugging Face-layout checkpoint directory. None serves the built-in model."""
    served_model_name: str | None = None
    """The model name clients use in requests (default: the directory's name)."""
    dtype: str = "auto"
    """Weight and activation dtype: auto, float32, bfloat16 or float16."""
    device: str = "auto"
    """cpu, cuda, cuda:N, or auto (cuda when available)."""
    max_model_len: int | None = None
    """Longest prompt + completion in tokens (default: the model's max_position_embeddings)."""
    seed: int = 0
    """Seed for unseeded sampling and for the hidden-state projection."""
    hidden_state_dim: int = 64
    """Size that final hidden states are projected to when a request asks for them (0: no projection)."""
    max_lora_rank: int = 16
    """Largest rank of a LoRA adapter per projection (q, k, v, o, gate, up, down). Submitted deltas are padded
    to it before they are queued, so every version has the same shapes and a swap allocates nothing; a bigger
    delta is refused when it is submitted."""
    # multi-adapter batches (adapters)
    max_resident_versions: int = 4
    """Weight versions (LoRA delta sets) held in the projections' slot buffers at once, allocated at start.
    Each sequence runs on the version it was admitted with to its end, so a promotion or rollback leaves the
    previous version resident while its sequences finish; a step computes every row's delta from its own slot.
    When all slots hold versions with running sequences, new sequences of another version wait."""

    # -- threads on a shared host (issue 10, "peers"; see aphrodite/engine/threads.py) --
    num_threads: int | None = None
    """Intra-op threads of the forward pass on the CPU. Default: $OMP_NUM_THREADS if set, else the cores free
    when the engine starts (its CPU affinity less what other processes keep busy, sampled over 0.2 s), so a
    busy neighbour does not leave threads waiting at every barrier for a descheduled one."""

    def __post_init__(self) -> None:
        if self.max_model_len is not None and self.max_model_len < 1:
            raise ValueError("max_model_len must be positive")
        if self.hidden_state_dim < 0:
            raise ValueError("hidden_state_dim must be >= 0")
        if self.max_lora_rank < 1:
            raise ValueError("max_lora_rank must be >= 1")
        if self.max_resident_versions < 1:
            raise ValueError("max_resident_versions must be >= 1")
        if self.num_threads is not None and self.num_threads < 1:
            raise ValueError("num_threads must be >= 1")

    def resolved_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        device = torch.device(self.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("--device cuda was asked for but no CUDA device is available")
        return device


@dataclass
class CacheConfig:
    """The paged KV cache."""

    block_size: int = 16
    """Tokens per KV-cache block."""
    kv_cache_space_gb: float = 1.0
    """Memory budget for the KV cache in GiB; the cache never grows past it."""
    # -- prefix caching (issue 10, "prefix") --
    enable_prefix_caching: bool = True
    """Share the KV blocks of identical prompt prefixes between requests: full blocks are kept, reference-counted,
    under a hash of the weight version and every token up to the block's end, and evicted least recently used
    only when a fresh block is needed. A new request computes only the part of its prompt that is not cached.
    Blocks are keyed by the weight version that computed them, so after a swap or rollback no request is served
    keys and values of another version."""

    def __post_init__(self) -> None:
        if self.block_size < 1:
            raise ValueError("block_size must be positive")
        if self.kv_cache_space_gb <= 0:
            raise ValueError("kv_cache_space_gb must be positive")
