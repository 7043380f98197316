"""--learning-export-dir: served versions as PEFT adapters in vLLM's filesystem-resolver layout, loadable by peft
with our logits, swapped atomically."""

from __future__ import annotations

import json

import pytest
import torch

from aphrodite.continuous_learning.fleet.export import AdapterExporter
from aphrodite.continuous_learning.learner.versions import VersionStore
from aphrodite.engine.config import ModelLoadConfig
from aphrodite.engine.llm_engine import LLMEngine
from tests.continuous_learning.learner.test_versions import our_logits, random_deltas, sizes

peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def engine(tiny_model_dir) -> LLMEngine:
    return LLMEngine(ModelLoadConfig(model=str(tiny_model_dir)))


def resolves(root, name: str, base_model: str) -> bool:
    """vLLM's filesystem resolver's test: a directory named like the adapter, a LORA config of our base model."""
    path = root / name / "adapter_config.json"
    if not path.is_file():
        return False
    config = json.loads(path.read_text())
    return config["peft_type"] == "LORA" and config["base_model_name_or_path"] == base_model


def test_exported_versions_load_in_peft_with_our_logits(engine, tiny_model_dir, tmp_path) -> None:
    store = VersionStore(tmp_path / "versions", sizes(engine), str(tiny_model_dir))
    store.open()
    exporter = AdapterExporter(tmp_path / "export", "learned", "my-llama", keep=2)
    for v in (1, 2, 3):
        store.save(v, random_deltas(engine, seed=v), {"parent": v - 1})
        assert exporter.export(v, store.path(v)) == tmp_path / "export" / f"learned-v{v}"
    root = tmp_path / "export"
    assert exporter.exported() == [2, 3]  # the newest `keep`
    assert (root / "learned").resolve() == (root / "learned-v3").resolve()
    assert resolves(root, "learned-v3", "my-llama") and resolves(root, "learned", "my-llama")
    assert not any(p.name.startswith(".") for p in root.iterdir())  # no temporary left behind

    ids = torch.randint(0, 200, (1, 16), generator=torch.Generator().manual_seed(3))
    base = transformers.AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    model = peft.PeftModel.from_pretrained(base, str(root / "learned-v3")).eval()
    with torch.no_grad():
        expected = model(input_ids=ids).logits[0]
    fut = engine.submit_weights(3, store.load(3))
    engine.step()
    assert fut.result(timeout=0) == 3
    ours = our_logits(engine, ids)
    engine.rollback_weights(0)
    engine.step()
    assert (ours - expected).abs().max().item() <= 1e-4

    exporter.export(2, store.path(2))  # a rollback repoints the link; the directory was already there
    assert (root / "learned").resolve() == (root / "learned-v2").resolve()
    exporter.export(0, None)  # the base model serves: no learned adapter to resolve
    assert not (root / "learned").exists() and exporter.exported() == [2, 3]
