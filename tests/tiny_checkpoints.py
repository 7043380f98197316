"""Tiny random checkpoints in Hugging Face layout, made with transformers' own ``save_pretrained``."""

from __future__ import annotations

import json
from pathlib import Path

import torch

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Hello, how are you today? I am fine, thank you.",
    "Paris is the capital of France. Berlin is the capital of Germany.",
    "One two three four five six seven eight nine ten.",
    "A language model predicts the next token from the previous ones.",
    "def main():\n    print('hello world')\n",
] * 20


def make_tokenizer(out: Path, vocab_size: int = 384) -> int:
    """Train a byte-level BPE with ChatML specials into ``out``; returns its vocab size."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_CORPUS, trainer)
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps({
        "chat_template": CHATML, "eos_token": "<|im_end|>", "bos_token": None, "pad_token": "<|endoftext|>",
    }))
    return tok.get_vocab_size()


def make_checkpoint(out: Path, arch: str = "llama", seed: int = 0, dtype: torch.dtype = torch.float32,
                    **overrides) -> Path:
    """Save a random Llama or Qwen2 model plus a tiny tokenizer into ``out``."""
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    vocab = make_tokenizer(out)
    eos = json.loads((out / "tokenizer.json").read_text())["added_tokens"][2]["id"]
    kw = dict(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
              eos_token_id=eos, bos_token_id=None, tie_word_embeddings=False)
    kw.update(overrides)
    torch.manual_seed(seed)
    if arch == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(**kw))
        with torch.no_grad():  # random biases, so the q/k/v bias path is exercised
            for layer in model.model.layers:
                for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                    proj.bias.normal_(0, 0.1)
    else:
        model = LlamaForCausalLM(LlamaConfig(**kw))
    model.to(dtype).save_pretrained(out, safe_serialization=True)
    return out
