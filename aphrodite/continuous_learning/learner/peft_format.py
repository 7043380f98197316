"""Our LoRA deltas <-> a PEFT adapter (``adapter_config.json`` + ``adapter_model.safetensors``).

We pack q/k/v into ``qkv_proj`` and gate/up into ``gate_up_proj``; PEFT, transformers and vLLM name each
projection. A packed delta ``scale * B @ A`` with ``B = [B_q; B_k; B_v]`` (rows per part) splits exactly into
per-projection adapters sharing A: ``delta_q = scale * B_q @ A``. Loading reverses it: parts that share one A
become one packed delta of the same rank again (so a version read back from disk keeps its rank); parts with
different A become a block-diagonal delta (A stacked, each B in its own rows and columns).
"""

from __future__ import annotations

from typing import Any

import torch

from aphrodite.engine.weights import LoRADelta

PARTS = {"qkv_proj": ("q_proj", "k_proj", "v_proj"), "gate_up_proj": ("gate_proj", "up_proj")}
"""Our packed projections and the per-projection names they hold, in row order."""
_PACKED_OF = {part: (packed, i) for packed, parts in PARTS.items() for i, part in enumerate(parts)}


def _peft_module(name: str) -> str:
    """``layers.3.self_attn.q_proj`` -> ``base_model.model.model.layers.3.self_attn.q_proj``."""
    inner = f"model.{name}" if name.startswith("layers.") else name
    return f"base_model.model.{inner}"


def _our_module(key: str) -> str:
    """Inverse of ``_peft_module`` (without the ``.lora_A.weight`` tail)."""
    inner = key.removeprefix("base_model.model.")
    return inner.removeprefix("model.") if inner.startswith("model.layers.") else inner


def to_peft(deltas: dict[str, LoRADelta], sizes: dict[str, list[int]],
            base_model: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(PEFT state dict, ``adapter_config.json`` fields) of ``deltas``; ``sizes`` gives each packed
    projection's part sizes (``LoRACapableLinear.output_sizes``)."""
    state: dict[str, torch.Tensor] = {}
    ranks: dict[str, tuple[int, float]] = {}  # module -> (r, lora_alpha)
    for name, d in sorted(deltas.items()):
        prefix, proj = name.rsplit(".", 1)
        parts = PARTS.get(proj)
        if parts is None:
            pieces = [(name, d.b)]
        else:
            rows = torch.tensor(sizes[name]).cumsum(0).tolist()
            pieces = [(f"{prefix}.{part}", d.b[end - size:end]) for part, size, end in zip(parts, sizes[name], rows)]
        r = d.a.shape[0]
        for module, b in pieces:
            key = _peft_module(module)
            state[f"{key}.lora_A.weight"] = d.a.to(torch.float32).contiguous().clone()
            state[f"{key}.lora_B.weight"] = b.to(torch.float32).contiguous().clone()
            ranks[module] = (r, d.scale * r)  # PEFT's scale is lora_alpha / r
    (r, alpha), _ = max(((v, list(ranks.values()).count(v)) for v in set(ranks.values())),
                        key=lambda x: x[1], default=((8, 8.0), 0))
    config = {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": base_model,
        "r": r, "lora_alpha": alpha, "lora_dropout": 0.0, "bias": "none", "fan_in_fan_out": False,
        "use_rslora": False, "use_dora": False, "init_lora_weights": True, "inference_mode": True,
        "target_modules": sorted({m.rsplit(".", 1)[1] for m in ranks}),
        # modules whose rank or alpha differ from the default, by full name (PEFT matches name suffixes)
        "rank_pattern": {f"model.{m}" if m.startswith("layers.") else m: v[0] for m, v in ranks.items()
                         if v[0] != r},
        "alpha_pattern": {f"model.{m}" if m.startswith("layers.") else m: v[1] for m, v in ranks.items()
                          if v[1] != alpha},
    }
    return state, config


def _scale_of(module: str, r: int, config: dict[str, Any]) -> float:
    full = f"model.{module}" if module.startswith("layers.") else module
    r = int(config.get("rank_pattern", {}).get(full, r))
    return float(config.get("alpha_pattern", {}).get(full, config["lora_alpha"])) / r


def from_peft(state: dict[str, torch.Tensor], config: dict[str, Any],
              sizes: dict[str, list[int]]) -> dict[str, LoRADelta]:
    """Our packed deltas from a PEFT adapter (ours or any other LoRA on the same projections)."""
    parts: dict[str, dict[int, tuple[torch.Tensor, torch.Tensor, float]]] = {}
    for key, a in state.items():
        if ".lora_A." not in key:
            continue
        b = state[key.replace(".lora_A.", ".lora_B.")]
        module = _our_module(key.split(".lora_A.")[0])
        prefix, proj = module.rsplit(".", 1)
        packed, index = _PACKED_OF.get(proj, (proj, 0))
        parts.setdefault(f"{prefix}.{packed}", {})[index] = (a, b, _scale_of(module, a.shape[0], config))
    return {name: _pack(shards, sizes[name]) for name, shards in parts.items()}


def _pack(shards: dict[int, tuple[torch.Tensor, torch.Tensor, float]], sizes: list[int]) -> LoRADelta:
    scales = {s for _, _, s in shards.values()}
    same_scale = len(scales) == 1
    scale = scales.pop() if same_scale else 1.0
    first_a = next(iter(shards.values()))[0]
    if same_scale and len(shards) == len(sizes) and all(torch.equal(a, first_a) for a, _, _ in shards.values()):
        return LoRADelta(first_a.clone(), torch.cat([shards[i][1] for i in range(len(sizes))]), scale)
    a = torch.cat([shards[i][0] for i in sorted(shards)])  # (sum r_i, in)
    b = torch.zeros(sum(sizes), a.shape[0], dtype=a.dtype)
    col = 0
    for i in sorted(shards):
        a_i, b_i, s_i = shards[i]
        row = sum(sizes[:i])
        b[row:row + sizes[i], col:col + a_i.shape[0]] = b_i if same_scale else s_i * b_i
        col += a_i.shape[0]
    return LoRADelta(a, b, scale)
