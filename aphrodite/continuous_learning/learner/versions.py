"""Promoted weight versions on disk: one PEFT adapter directory per version, plus which one serves.

Layout under ``<learning-dir>/versions/``::

    v3/adapter_config.json        PEFT LoraConfig (load with peft.PeftModel.from_pretrained or vLLM --lora-modules)
    v3/adapter_model.safetensors  per-projection lora_A / lora_B (q, k, v, o, gate, up, down)
    v3/manifest.json              version, parent, created, signals by source, interactions, gate result
    serving.json                  {"version": 3}: what serves after a restart

Every write is atomic and durable: files go into a temporary directory, each is fsynced, the directory is
renamed into place and its parent fsynced, so a crash leaves either the whole version or none of it.
Directories are 0700 and files 0600. The newest ``keep`` versions are kept (never the serving one).
Files of the earlier layout (``v<N>.safetensors``) are migrated to directories when the store opens.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from safetensors import safe_open
from safetensors.torch import load_file, save_file

from aphrodite.common.faults import crash_point
from aphrodite.continuous_learning.learner.peft_format import from_peft, to_peft
from aphrodite.engine.weights import LoRADelta

CONFIG, WEIGHTS, MANIFEST = "adapter_config.json", "adapter_model.safetensors", "manifest.json"


def fsync(path: Path) -> None:
    """fsync a file or a directory (after a rename, the directory's entry is what must reach the disk)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_json(path: Path, obj: Any) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())


def _replace_json(path: Path, obj: Any) -> None:
    """Write ``path`` atomically: temporary file, fsync, rename, fsync the directory."""
    tmp = path.with_name(f".{path.name}.tmp")
    _write_json(tmp, obj)
    os.replace(tmp, path)
    fsync(path.parent)


class VersionStore:
    """Saved versions (PEFT adapter directories with manifests) and the serving marker."""

    def __init__(self, root: Path, sizes: dict[str, list[int]], base_model: str, keep: int = 16) -> None:
        self.root = root
        self.sizes = sizes
        """Part sizes of each packed projection (``LoRACapableLinear.output_sizes``)."""
        self.base_model = base_model
        self.keep = keep

    def open(self) -> None:
        """Create the directory (0700) and migrate files of the earlier layout."""
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        for partial in self.root.glob(".v*.tmp-*"):  # left by a crash before the rename: never loaded
            shutil.rmtree(partial, ignore_errors=True)
        for old in sorted(self.root.glob("v*.safetensors")):
            if old.stem[1:].isdigit():
                self._migrate(old)

    def path(self, version: int) -> Path:
        return self.root / f"v{version}"

    def versions(self) -> list[int]:
        """Saved versions, oldest first."""
        if not self.root.is_dir():
            return []
        return sorted(int(p.name[1:]) for p in self.root.iterdir()
                      if p.is_dir() and p.name[1:].isdigit() and (p / MANIFEST).is_file())

    def save(self, version: int, deltas: dict[str, LoRADelta], manifest: dict[str, Any]) -> Path:
        """Write version ``version`` atomically; returns its directory."""
        self.root.mkdir(parents=True, exist_ok=True)
        final = self.path(version)
        if final.exists():
            raise FileExistsError(f"weight version {version} is already saved at {final}")
        tmp = self.root / f".v{version}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(mode=0o700)
        state, config = to_peft(deltas, self.sizes, self.base_model)
        save_file(state, str(tmp / WEIGHTS), metadata={"format": "pt"})
        os.chmod(tmp / WEIGHTS, 0o600)
        fsync(tmp / WEIGHTS)
        _write_json(tmp / CONFIG, config)
        _write_json(tmp / MANIFEST, {"version": version, "created": time.time(), **manifest})
        fsync(tmp)
        crash_point("version.written")
        os.rename(tmp, final)
        fsync(self.root)
        crash_point("version.renamed")
        return final

    def load(self, version: int) -> dict[str, LoRADelta]:
        """The deltas of a saved version, packed as the engine serves them."""
        path = self.path(version)
        config = json.loads((path / CONFIG).read_text())
        return from_peft(load_file(str(path / WEIGHTS)), config, self.sizes)

    def manifest(self, version: int) -> dict[str, Any]:
        return json.loads((self.path(version) / MANIFEST).read_text())

    def update_manifest(self, version: int, **changes: Any) -> None:
        """Rewrite a manifest atomically with ``changes`` merged in."""
        _replace_json(self.path(version) / MANIFEST, {**self.manifest(version), **changes})

    def prune(self, serving: int) -> list[int]:
        """Delete the oldest versions beyond ``keep`` (never ``serving``); returns those deleted."""
        saved = [v for v in self.versions() if v != serving]
        excess = saved[:max(0, len(saved) + (serving in self.versions()) - self.keep)]
        for v in excess:
            shutil.rmtree(self.path(v))
        if excess:
            fsync(self.root)
        return excess

    @property
    def serving(self) -> int:
        """The version recorded as serving (0 when none is, or its directory is gone)."""
        marker = self.root / "serving.json"
        version = json.loads(marker.read_text())["version"] if marker.is_file() else 0
        return version if version in self.versions() else 0

    def record_serving(self, version: int) -> None:
        """Remember durably which version serves, so a restart serves it again."""
        self.root.mkdir(parents=True, exist_ok=True)
        _replace_json(self.root / "serving.json", {"version": version})

    def forget(self, interaction_ids: list[str]) -> list[int]:
        """Mark in their manifests the versions that learned from any of ``interaction_ids`` (the deltas
        cannot unlearn them; an operator can roll back past them). Returns the versions marked."""
        ids = set(interaction_ids)
        marked = []
        for v in self.versions():
            m = self.manifest(v)
            hit = ids.intersection(m.get("interaction_ids", []))
            if hit:
                forgotten = sorted(set(m.get("forgotten_interactions", [])) | hit)
                self.update_manifest(v, forgotten_interactions=forgotten)
                marked.append(v)
        return marked

    def _migrate(self, old: Path) -> None:
        """``v<N>.safetensors`` (deltas by packed projection, scales and evaluation in metadata) -> ``v<N>/``."""
        version = int(old.stem[1:])
        with safe_open(str(old), framework="pt") as f:
            meta = f.metadata()
            scales = json.loads(meta["scale"])
            deltas = {name: LoRADelta(f.get_tensor(f"{name}.a"), f.get_tensor(f"{name}.b"), scale)
                      for name, scale in scales.items()}
        if not self.path(version).exists():
            gate = json.loads(meta.get("evaluation", "{}"))
            self.save(version, deltas, {"parent": None, "migrated_from": old.name, "gate": gate,
                                        "signals": {}, "interaction_ids": [], "forgotten_interactions": []})
        old.unlink()

