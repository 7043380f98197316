"""vLLM's runtime LoRA routes: ``POST /v1/load_lora_adapter`` and ``POST /v1/unload_lora_adapter`` (admin only),
and loaded adapters served as model names, so tools written for vLLM work against this server.

A loaded adapter (a PEFT LoRA directory, as vLLM reads it) becomes a weight version of the engine, kept beside
the serving one through the engine's ``WeightVersions`` interface (``submit_weights(..., serve=False)``), and a
named lineage of the engine under its ``lora_name`` (``name_weights``): a request whose ``model`` is that name
runs on it, pinned, in the same batches as requests for the base model and other adapters (it takes a resident
slot while it has sequences; when every slot is held, its sequences wait). ``"serve": true`` (an Aphrodite
extension) also makes it the version requests for the base model's name get. An adapter the model's buffers
cannot hold (a rank above ``--max-lora-rank``, shapes of another model) is refused with a 400 at load time.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from safetensors.torch import load_file

from aphrodite.continuous_learning.learner.peft_format import from_peft
from aphrodite.endpoints.openai.errors import APIError, quote
from aphrodite.endpoints.openai.protocol import ModelCard

_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.:@+-]{0,127}$"


class LoadLoRAAdapterRequest(BaseModel):
    """vLLM's body for ``POST /v1/load_lora_adapter``."""

    model_config = ConfigDict(extra="forbid")

    lora_name: str = Field(pattern=_NAME)
    """The model name requests use for this adapter."""
    lora_path: str = Field(min_length=1, max_length=4096)
    """A PEFT LoRA directory on this server (``adapter_config.json`` + ``adapter_model.safetensors``)."""
    load_inplace: bool = False
    """Replace an adapter already loaded under this name (vLLM's flag)."""
    serve: bool = False
    """Aphrodite extension: also make it the weights every request is served with from the next engine step."""


class UnloadLoRAAdapterRequest(BaseModel):
    """vLLM's body for ``POST /v1/unload_lora_adapter``."""

    model_config = ConfigDict(extra="forbid")

    lora_name: str = Field(min_length=1, max_length=128)
    lora_int_id: int | None = None
    """Accepted for vLLM compatibility; the name decides."""


@dataclass
class LoadedAdapter:
    """An adapter loaded at run time: its name, where it came from and the engine version holding it."""

    name: str
    path: str
    version: int
    created: int


class OpenAIServingLoRA:
    """The adapters loaded at run time and the two routes that change them."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.adapters: dict[str, LoadedAdapter] = {}
        self._lock = asyncio.Lock()
        self.tenant_models = False
        """Per-tenant adapters are on: names of the form ``<base>:<tenant>`` are theirs."""

    async def load(self, req: LoadLoRAAdapterRequest) -> str:
        if req.lora_name == self.engine.model_name:
            raise APIError(f"'{quote(req.lora_name)}' is the base model's name; choose another lora_name.", 400,
                           param="lora_name", code="invalid_lora_name")
        if self.tenant_models and req.lora_name.startswith(self.engine.model_name + ":"):
            raise APIError(f"'{quote(req.lora_name)}' has the form of a tenant's model name (<base>:<tenant>), "
                           "which per-tenant adapters reserve; choose another lora_name.", 400,
                           param="lora_name", code="invalid_lora_name")
        async with self._lock:
            if req.lora_name in self.adapters and not req.load_inplace:
                raise APIError(f"The lora adapter '{quote(req.lora_name)}' has already been loaded; unload it "
                               "first or send load_inplace: true.", 400, param="lora_name", code="lora_exists")
            deltas = await asyncio.to_thread(self._read, req.lora_path)
            version = await self._submit(deltas, serve=req.serve)
            await self.engine.name_weights(req.lora_name, version)
            self.adapters[req.lora_name] = LoadedAdapter(req.lora_name, req.lora_path, version, int(time.time()))
        return f"Success: LoRA adapter '{req.lora_name}' added successfully."

    async def unload(self, req: UnloadLoRAAdapterRequest) -> str:
        async with self._lock:
            adapter = self.adapters.get(req.lora_name)
            if adapter is None:
                raise APIError(f"The lora adapter '{quote(req.lora_name)}' cannot be found.", 404,
                               param="lora_name", code="lora_not_found")
            if adapter.version == self.engine.weight_version:
                raise APIError(f"The lora adapter '{quote(req.lora_name)}' serves every request now (weight version "
                               f"{adapter.version}); serve another version first (POST /v1/learning/control "
                               '{"action": "rollback"}).', 409, param="lora_name", code="lora_serving")
            await self.engine.name_weights(req.lora_name, None)  # a request already waiting gets the base model
            del self.adapters[req.lora_name]
        return f"Success: LoRA adapter '{req.lora_name}' removed successfully."

    def check(self, model: str) -> bool:
        """Whether ``model`` names a loaded adapter (its requests run on the adapter's lineage)."""
        return model in self.adapters

    def cards(self) -> list[ModelCard]:
        """``/v1/models`` entries of the loaded adapters, as vLLM lists them (``root`` is the adapter path,
        ``parent`` the base model)."""
        return [ModelCard(id=a.name, root=a.path, parent=self.engine.model_name, created=a.created,
                          max_model_len=self.engine.max_model_len) for a in self.adapters.values()]

    def _read(self, path: str) -> dict[str, Any]:
        """The adapter at ``path`` as our packed deltas; 400 when it is not a PEFT LoRA this model can use."""
        root = Path(path)
        config_path, weights = root / "adapter_config.json", root / "adapter_model.safetensors"
        try:
            found = config_path.is_file() and weights.is_file()
        except (OSError, ValueError):  # a name too long, a NUL byte
            found = False
        if not found:
            raise APIError(f"No PEFT LoRA adapter at '{quote(path)}': it needs adapter_config.json and "
                           "adapter_model.safetensors.", 400, param="lora_path", code="invalid_lora_path")
        try:
            config = json.loads(config_path.read_text())
            if config.get("peft_type") != "LORA":
                raise ValueError(f"peft_type is {config.get('peft_type')!r}, not 'LORA'")
            sizes = {n: layer.output_sizes for n, layer in self.engine.model.lora_targets().items()}
            return from_peft(load_file(str(weights)), config, sizes)
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise APIError(f"The adapter at '{quote(path)}' cannot be used with this model: {quote(exc, 300)}.", 400,
                           param="lora_path", code="invalid_lora_adapter") from None

    async def _submit(self, deltas: dict[str, Any], serve: bool) -> int:
        version = max(self.engine.weight_versions) + 1
        try:
            await self.engine.submit_weights(version, deltas, serve=serve)
        except ValueError as exc:  # shapes or ranks the model's buffers do not hold
            raise APIError(f"The adapter cannot be used with this model: {quote(exc, 300)}.", 400,
                           param="lora_path", code="invalid_lora_adapter") from None
        return version
