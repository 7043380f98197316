"""Save and load nodes as safetensors files: tensors plus the constructor config as JSON metadata."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors import safe_open
from safetensors.torch import save_file

NodeT = TypeVar("NodeT", bound="Checkpointable")


class Checkpointable:
    """Mixin: ``save(path)`` / ``cls.load(path)`` on top of ``config()``, ``state_dict()`` and
    ``load_state_dict()``, which each node implements."""

    def config(self) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def from_config(cls: type[NodeT], config: dict[str, Any]) -> NodeT:
        """Build an untrained node from ``config()``'s output (keyword constructors by default)."""
        return cls(**config)

    def state_dict(self) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        raise NotImplementedError

    def save(self, path: str | Path) -> None:
        """Write every tensor of ``state_dict()`` and the JSON config to one safetensors file."""
        tensors = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        meta = {"class": type(self).__name__, "config": json.dumps(self.config())}
        save_file(tensors, str(path), metadata=meta)

    @classmethod
    def load(cls: type[NodeT], path: str | Path, device: str = "cpu") -> NodeT:
        """Rebuild a node saved by :meth:`save` (the config must match this class)."""
        with safe_open(str(path), framework="pt", device=device) as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        if meta.get("class") != cls.__name__:
            raise ValueError(f"{path} holds a {meta.get('class')!r}, not a {cls.__name__}")
        config = json.loads(meta["config"])
        if "device" in config:
            config["device"] = device
        node = cls.from_config(config)
        node.load_state_dict(tensors)
        return node
