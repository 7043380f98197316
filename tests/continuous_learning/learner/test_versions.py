"""Saved versions are PEFT adapters: peft loads one onto the transformers model and gets our logits."""

from __future__ import annotations

import json
import stat

import pytest
import torch
from safetensors.torch import save_file

from aphrodite.continuous_learning.learner.versions import VersionStore
from aphrodite.engine.config import ModelLoadConfig
from aphrodite.engine.llm_engine import LLMEngine
from aphrodite.engine.weights import LoRADelta
from aphrodite.modeling.attention import AttentionMetadata

peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def engine(tiny_model_dir) -> LLMEngine:
    return LLMEngine(ModelLoadConfig(model=str(tiny_model_dir)))


def sizes(engine: LLMEngine) -> dict[str, list[int]]:
    return {n: layer.output_sizes for n, layer in engine.model.lora_targets().items()}


def random_deltas(engine: LLMEngine, rank: int = 4, seed: int = 0) -> dict[str, LoRADelta]:
    """Deltas like the trainer's: one A per packed projection, on every layer projection."""
    g = torch.Generator().manual_seed(seed)
    return {name: LoRADelta(torch.randn(rank, layer.in_features, generator=g) * 0.3,
                            torch.randn(layer.out_features, rank, generator=g) * 0.3, scale=2.0)
            for name, layer in engine.model.lora_targets().items() if name.startswith("layers.")}


def our_logits(engine: LLMEngine, ids: torch.Tensor) -> torch.Tensor:
    T = ids.shape[1]
    meta = AttentionMetadata(True, AttentionMetadata.causal([T], T, ids.device))
    with torch.no_grad():
        return engine.model.compute_logits(engine.model(ids, torch.arange(T)[None], meta)[0])


def test_peft_loads_a_saved_version_with_our_logits(engine, tiny_model_dir, tmp_path) -> None:
    store = VersionStore(tmp_path / "versions", sizes(engine), str(tiny_model_dir))
    store.open()
    deltas = random_deltas(engine)
    path = store.save(1, deltas, {"parent": 0, "interaction_ids": ["cmpl-1"]})
    config = json.loads((path / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 4 and config["lora_alpha"] == 8.0
    assert set(config["target_modules"]) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                             "down_proj"}
    assert stat.S_IMODE(path.stat().st_mode) == 0o700
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in path.iterdir())

    ids = torch.randint(0, 200, (1, 20), generator=torch.Generator().manual_seed(1))
    base = transformers.AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    model = peft.PeftModel.from_pretrained(base, str(path)).eval()
    with torch.no_grad():
        expected = model(input_ids=ids).logits[0]
    plain = our_logits(engine, ids)
    fut = engine.submit_weights(1, store.load(1))
    engine.step()
    assert fut.result(timeout=0) == 1
    ours = our_logits(engine, ids)
    engine.rollback_weights(0)
    engine.step()
    assert (ours - plain).abs().max().item() > 1e-2  # the version really changes the logits
    assert (ours - expected).abs().max().item() <= 1e-4


def test_a_version_read_back_keeps_its_rank_and_values(engine, tmp_path) -> None:
    store = VersionStore(tmp_path / "versions", sizes(engine), "base")
    store.open()
    deltas = random_deltas(engine, rank=3, seed=2)
    store.save(2, deltas, {})
    back = store.load(2)
    assert back.keys() == deltas.keys()
    for name, d in deltas.items():
        assert back[name].a.shape == d.a.shape and back[name].scale == pytest.approx(d.scale)
        assert torch.allclose(back[name].b @ back[name].a, d.b @ d.a)


def test_keep_forget_serving_and_migration(engine, tmp_path) -> None:
    store = VersionStore(tmp_path / "versions", sizes(engine), "base", keep=2)
    store.root.mkdir(parents=True)
    old = random_deltas(engine, rank=2, seed=5)
    tensors = {f"{n}.{p}": getattr(d, p) for n, d in old.items() for p in "ab"}
    save_file(tensors, str(store.root / "v1.safetensors"),
              metadata={"version": "1", "scale": json.dumps({n: d.scale for n, d in old.items()})})
    store.open()  # migrates the earlier layout
    assert store.versions() == [1] and not (store.root / "v1.safetensors").exists()
    assert store.manifest(1)["migrated_from"] == "v1.safetensors"
    for v in (2, 3):
        store.save(v, old, {"parent": v - 1, "interaction_ids": [f"cmpl-{v}"]})
    store.record_serving(1)
    assert store.prune(serving=1) == [2] and store.versions() == [1, 3] and store.serving == 1
    assert store.forget(["cmpl-3", "cmpl-x"]) == [3]
    assert store.manifest(3)["forgotten_interactions"] == ["cmpl-3"]
    with pytest.raises(FileExistsError):
        store.save(3, old, {})
