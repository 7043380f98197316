"""Cross-check with PEFT: the same LoRA adapters give the same logits in our engine as in PEFT + transformers."""

from __future__ import annotations

import pytest
import torch

from aphrodite.engine.config import ModelLoadConfig
from aphrodite.engine.llm_engine import LLMEngine
from aphrodite.engine.weights import deltas_from_peft
from aphrodite.modeling.attention import AttentionMetadata
from tests.tiny_checkpoints import make_checkpoint

peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")


@pytest.mark.parametrize("targets", [["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
                                     ["q_proj", "v_proj", "up_proj"]])
def test_peft_adapters_give_the_same_logits(tmp_path, targets) -> None:
    ckpt = make_checkpoint(tmp_path / "ckpt", "qwen2", seed=4)
    base = transformers.AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.float32)
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=targets, lora_dropout=0.0)
    model = peft.get_peft_model(base, config).eval()
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.2)  # PEFT starts B at zero: give the adapters something to do
    state = {k: v for k, v in model.state_dict().items() if "lora_" in k}
    ids = torch.randint(0, 300, (1, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model(input_ids=ids).logits[0]

    engine = LLMEngine(ModelLoadConfig(model=str(ckpt)))
    meta = AttentionMetadata(True, AttentionMetadata.causal([24], 24, torch.device("cpu")))
    with torch.no_grad():
        plain = engine.model.compute_logits(engine.model(ids, torch.arange(24)[None], meta)[0])
    fut = engine.submit_weights(1, deltas_from_peft(engine.model, state, scale=8 / 4))
    engine.step()
    assert fut.result(timeout=0) == 1
    with torch.no_grad():
        ours = engine.model.compute_logits(engine.model(ids, torch.arange(24)[None], meta)[0])
    assert (ours - plain).abs().max().item() > 1e-2  # the adapters really change the logits
    assert (ours - expected).abs().max().item() <= 1e-4
