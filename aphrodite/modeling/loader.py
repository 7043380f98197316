"""Load a Hugging Face checkpoint directory (``config.json`` + ``*.safetensors``, sharded or not)."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import torch
from safetensors import safe_open

from aphrodite.modeling.config import ModelConfig
from aphrodite.modeling.llama import LlamaForCausalLM

logger = logging.getLogger(__name__)

# HF name (after the "model." prefix) -> (our name, shard index in a packed projection or None)
_PACKED = {
    "self_attn.q_proj": ("self_attn.qkv_proj", 0),
    "self_attn.k_proj": ("self_attn.qkv_proj", 1),
    "self_attn.v_proj": ("self_attn.qkv_proj", 2),
    "mlp.gate_proj": ("mlp.gate_up_proj", 0),
    "mlp.up_proj": ("mlp.gate_up_proj", 1),
}
_LAYER = re.compile(r"^layers\.(\d+)\.(.+)\.(weight|bias)$")

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(requested: str, cfg: ModelConfig, device: torch.device) -> torch.dtype:
    """``auto`` takes the checkpoint's dtype, except float16 on CPU (slow there), which runs in float32."""
    if requested != "auto":
        if requested not in DTYPES:
            raise ValueError(f"unknown dtype {requested!r}; choose auto, {', '.join(DTYPES)}")
        return DTYPES[requested]
    dtype = DTYPES.get(str(cfg.torch_dtype).replace("torch.", ""), torch.float32)
    if device.type == "cpu" and dtype == torch.float16:
        return torch.float32
    return dtype


def _load_tensor(model: LlamaForCausalLM, name: str, tensor: torch.Tensor) -> bool:
    """Copy one checkpoint tensor into its (possibly packed) parameter; False if it is not ours."""
    name = name.removeprefix("model.")
    if name == "lm_head.weight" and model.config.tie_word_embeddings:
        return True
    if name.endswith("rotary_emb.inv_freq"):
        return True
    shard = None
    m = _LAYER.match(name)
    if m:
        idx, module, kind = m.groups()
        if module in _PACKED:
            module, shard = _PACKED[module]
        name = f"layers.{idx}.{module}.{kind}"
    params = dict(model.named_parameters())
    param = params.get(name)
    if param is None:
        return False
    target = param.data
    if shard is not None:
        owner = model.get_submodule(name.rsplit(".", 1)[0])
        start = sum(owner.output_sizes[:shard])
        target = target.narrow(0, start, owner.output_sizes[shard])
    if target.shape != tensor.shape:
        raise ValueError(f"checkpoint tensor {name} has shape {tuple(tensor.shape)}, expected {tuple(target.shape)}")
    target.copy_(tensor)
    return True


def load_model(model_dir: str | Path, dtype: str = "auto", device: str | torch.device = "cpu") -> LlamaForCausalLM:
    """Build the model from ``config.json`` and fill it from every ``*.safetensors`` file in the directory."""
    model_dir = Path(model_dir)
    cfg = ModelConfig.from_pretrained(model_dir)
    device = torch.device(device)
    torch_dtype = resolve_dtype(dtype, cfg, device)
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no *.safetensors files in {model_dir}")
    with torch.device(device):
        model = LlamaForCausalLM(cfg)
    model.to(torch_dtype)
    seen: set[str] = set()
    with torch.no_grad():
        for path in files:
            with safe_open(str(path), framework="pt", device=str(device)) as f:
                for key in f.keys():
                    if _load_tensor(model, key, f.get_tensor(key)):
                        seen.add(key)
                    else:
                        logger.warning("ignoring checkpoint tensor %s", key)
    expected = 2 + 9 * cfg.num_hidden_layers + (0 if cfg.tie_word_embeddings else 1)
    if len([k for k in seen if "rotary_emb" not in k and not k.endswith("bias")]) < expected:
        raise ValueError(f"checkpoint in {model_dir} is missing weights ({len(seen)} tensors loaded)")
    model.eval()
    return model
