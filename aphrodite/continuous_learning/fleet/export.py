"""``--learning-export-dir``: every version that starts serving, written as a PEFT adapter in the layout of
vLLM's filesystem LoRA resolver (``VLLM_LORA_RESOLVER_CACHE_DIR``: one directory per adapter name)::

    <dir>/<name>-v3/adapter_config.json        base_model_name_or_path = the vLLM servers' --model argument
    <dir>/<name>-v3/adapter_model.safetensors
    <dir>/<name> -> <name>-v3                  the version serving now (a symlink; absent while the base serves)

A vLLM replica with ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=true`` and the resolver pointed at ``<dir>`` serves
``model: <name>-v3`` by loading that directory on first use. Updates are atomic: a version's directory is
written under a temporary name, each file and the directory fsynced, then renamed into place; the symlink is
replaced with ``rename`` too. So a reader sees a whole adapter or none. The newest ``keep`` versions are kept.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from aphrodite.continuous_learning.learner.versions import fsync

_DIR_MODE, _FILE_MODE = 0o750, 0o640  # group-readable: the vLLM servers' user shares a group with ours
_FILES = ("adapter_config.json", "adapter_model.safetensors")


class AdapterExporter:
    """Writes served versions into ``root`` for vLLM's filesystem resolver."""

    def __init__(self, root: str | Path, name: str, base_model: str, keep: int = 16) -> None:
        self.root = Path(os.path.expanduser(str(root)))
        self.name = name
        self.base_model = base_model
        """``base_model_name_or_path`` in each adapter: vLLM's resolver loads only adapters whose value equals
        its ``--model`` argument."""
        self.keep = keep

    def adapter_name(self, version: int) -> str:
        return f"{self.name}-v{version}"

    def export(self, version: int, source: Path | None) -> Path | None:
        """Make ``version`` (a PEFT directory at ``source``; None or version 0: the base model) the served one:
        write its adapter directory if absent, point ``<name>`` at it, prune old ones. Returns its directory."""
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, _DIR_MODE)
        if version == 0 or source is None:
            self._point(None)
            return None
        final = self.root / self.adapter_name(version)
        if not final.is_dir():
            self._write(final, source)
        self._point(final.name)
        self._prune(version)
        return final

    def _write(self, final: Path, source: Path) -> None:
        tmp = self.root / f".{final.name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(mode=_DIR_MODE)
        config = json.loads((source / _FILES[0]).read_text())
        config["base_model_name_or_path"] = self.base_model
        fd = os.open(tmp / _FILES[0], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, _FILE_MODE)
        with os.fdopen(fd, "w") as f:
            json.dump(config, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        shutil.copyfile(source / _FILES[1], tmp / _FILES[1])
        os.chmod(tmp / _FILES[1], _FILE_MODE)
        fsync(tmp / _FILES[1])
        fsync(tmp)
        os.rename(tmp, final)
        fsync(self.root)

    def _point(self, target: str | None) -> None:
        link = self.root / self.name
        if target is None:
            if link.is_symlink():
                link.unlink()
                fsync(self.root)
            return
        tmp = self.root / f".{self.name}.link-{os.getpid()}"
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()
        os.symlink(target, tmp)  # relative: the directory can be mounted elsewhere
        os.replace(tmp, link)
        fsync(self.root)

    def exported(self) -> list[int]:
        """Versions in the export directory, oldest first."""
        prefix = f"{self.name}-v"
        if not self.root.is_dir():
            return []
        return sorted(int(p.name[len(prefix):]) for p in self.root.iterdir()
                      if p.name.startswith(prefix) and p.name[len(prefix):].isdigit() and not p.is_symlink())

    def _prune(self, serving: int) -> None:
        old = [v for v in self.exported() if v != serving]
        for v in old[:max(0, len(old) + 1 - self.keep)]:
            shutil.rmtree(self.root / self.adapter_name(v), ignore_errors=True)
