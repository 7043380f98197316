"""Our Llama-family model against transformers on random checkpoints: prefill and paged decode, fp32."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from aphrodite.engine.block_manager import BlockManager
from aphrodite.engine.model_runner import ModelRunner
from aphrodite.engine.sampling_params import SamplingParams
from aphrodite.engine.sequence import Sequence
from aphrodite.modeling.attention import AttentionMetadata
from aphrodite.modeling.loader import load_model
from tests.tiny_checkpoints import make_checkpoint

transformers = pytest.importorskip("transformers")

LLAMA3_ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 32}
CASES = {
    "llama": ("llama", {}),
    "qwen2-qkv-bias": ("qwen2", {}),
    "llama3-rope-tied": ("llama", {"rope_scaling": LLAMA3_ROPE, "tie_word_embeddings": True}),
    "mistral-like-mha-linear-rope": ("llama", {"num_key_value_heads": 4, "rope_theta": 1e6,
                                               "rope_scaling": {"rope_type": "linear", "factor": 2.0}}),
}


@pytest.fixture(scope="module", params=list(CASES))
def checkpoint(request, tmp_path_factory) -> Path:
    arch, overrides = CASES[request.param]
    return make_checkpoint(tmp_path_factory.mktemp(request.param), arch, seed=1, **overrides)


def reference_logits(model_dir: Path, ids: torch.Tensor) -> torch.Tensor:
    ref = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        return ref(ids).logits[0]  # (T, V)


def test_prefill_matches_transformers(checkpoint: Path) -> None:
    ids = torch.randint(0, 300, (1, 48), generator=torch.Generator().manual_seed(0))
    ours = load_model(checkpoint)
    meta = AttentionMetadata(True, AttentionMetadata.causal([48], 48, torch.device("cpu")))
    with torch.no_grad():
        logits = ours.compute_logits(ours(ids, torch.arange(48)[None], meta)[0])
    assert (logits - reference_logits(checkpoint, ids)).abs().max().item() <= 1e-4


def test_paged_decode_matches_transformers(checkpoint: Path) -> None:
    """Prefill 8 (and 11) tokens in two chunks, then feed the rest one at a time through the paged KV cache
    (block size 4)."""
    tokens = torch.randint(0, 300, (40,), generator=torch.Generator().manual_seed(1)).tolist()
    model = load_model(checkpoint)
    blocks = BlockManager(num_blocks=32, block_size=4)
    runner = ModelRunner(model, blocks)
    # two sequences decoding side by side, to exercise ragged context lengths in one batch
    seqs = [Sequence(f"r{i}", tokens[:8 + 3 * i], SamplingParams(), decoder=None) for i in range(2)]
    step_logits: list[list[torch.Tensor]] = [[], []]
    for s in seqs:
        blocks.allocate(s)
    with torch.no_grad():
        # the prompt in two chunks: the second attends to the first through the cache (chunked prefill)
        runner._prefill(seqs, [4, 4])
        for s in seqs:
            s.num_computed_tokens = 4
        hidden = runner._prefill(seqs, [s.num_tokens - 4 for s in seqs])
        for i, s in enumerate(seqs):
            step_logits[i].append(model.compute_logits(hidden[i, s.num_tokens - 5][None])[0])
        for _ in range(20):
            for i, s in enumerate(seqs):
                s.output_token_ids.append(tokens[s.num_tokens])
                blocks.append_slot(s)
            hidden = runner._decode(seqs)
            for i in range(2):
                step_logits[i].append(model.compute_logits(hidden[i, 0][None])[0])
    for i, s in enumerate(seqs):
        ref = reference_logits(checkpoint, torch.tensor([s.all_token_ids]))
        start = len(s.prompt_token_ids) - 1
        ours = torch.stack(step_logits[i])  # predictions for positions start .. end
        assert (ours - ref[start:start + len(ours)]).abs().max().item() <= 1e-4


def test_sharded_checkpoint_and_half_dtypes(tmp_path: Path) -> None:
    whole = make_checkpoint(tmp_path / "whole", seed=2)
    model = transformers.AutoModelForCausalLM.from_pretrained(whole)
    model.save_pretrained(tmp_path / "sharded", max_shard_size="100KB")
    for f in ("tokenizer.json", "tokenizer_config.json"):
        (tmp_path / "sharded" / f).write_bytes((whole / f).read_bytes())
    assert (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    a, b = load_model(whole), load_model(tmp_path / "sharded")
    for (na, pa), (nb, pb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert na == nb and torch.equal(pa, pb)
    for dtype, torch_dtype in (("bfloat16", torch.bfloat16), ("float16", torch.float16)):
        half = load_model(whole, dtype=dtype)
        assert next(half.parameters()).dtype == torch_dtype


def test_lora_delta_changes_the_projection(tmp_path: Path) -> None:
    model = load_model(make_checkpoint(tmp_path, seed=3))
    proj = model.layers[0].self_attn.qkv_proj
    x = torch.randn(2, proj.in_features)
    base = proj(x)
    a, b = torch.randn(4, proj.in_features), torch.randn(proj.out_features, 4)
    proj.set_lora(a, b, scale=0.5)
    torch.testing.assert_close(proj(x), base + 0.5 * (x @ a.T) @ b.T)
    proj.clear_lora()
    torch.testing.assert_close(proj(x), base)
    with pytest.raises(ValueError):
        proj.set_lora(torch.randn(4, 3), b, 1.0)
