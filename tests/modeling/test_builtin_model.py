"""The shipped built-in model: files, tokenizer, chat template, evaluation sets and held-out perplexity."""

from __future__ import annotations

import json
import random

import pytest
import torch

from aphrodite.modeling.builtin import data
from aphrodite.modeling.builtin.chat_format import CHAT_TEMPLATE, IM_END, render_chat
from aphrodite.modeling.builtin.evaluate import (CHECKPOINT_DIR, heldout_perplexity, load_tokenizer, perplexity,
                                                 read_eval_json)

MAX_CHECKPOINT_BYTES = 25_000_000
REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                  "README.md", "eval.json")


def _random_text(rng: random.Random, n: int) -> str:
    # Any code point but lone surrogates, which no UTF-8 text can hold.
    pools = [(0x20, 0x7E)] * 4 + [(0x0, 0x1F), (0xA0, 0x2FF), (0x400, 0x4FF), (0x4E00, 0x9FFF),
                                  (0x1F300, 0x1F64F), (0xE000, 0xF8FF), (0x10000, 0x10FFFF)]
    return "".join(chr(rng.randint(*rng.choice(pools))) for _ in range(n))


def test_checkpoint_files_exist_and_fit_the_size_budget():
    for name in REQUIRED_FILES:
        assert (CHECKPOINT_DIR / name).is_file(), name
    total = sum(p.stat().st_size for p in CHECKPOINT_DIR.iterdir() if p.is_file())
    assert total <= MAX_CHECKPOINT_BYTES


def test_config_and_tokenizer_agree_on_special_tokens():
    config = json.loads((CHECKPOINT_DIR / "config.json").read_text())
    tok_config = json.loads((CHECKPOINT_DIR / "tokenizer_config.json").read_text())
    tokenizer = load_tokenizer()
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert config["vocab_size"] == tokenizer.get_vocab_size()
    assert tok_config["eos_token"] == IM_END
    assert config["eos_token_id"] == tokenizer.token_to_id(IM_END)
    assert config["bos_token_id"] == tokenizer.token_to_id(tok_config["bos_token"])
    assert config["pad_token_id"] == tokenizer.token_to_id(tok_config["pad_token"])
    assert tok_config["chat_template"] == CHAT_TEMPLATE


def test_tokenizer_round_trips_arbitrary_text():
    tokenizer = load_tokenizer()
    rng = random.Random(0)
    samples = ["", " ", "Hello, world!", "  two  spaces\n\ttab\r\n", "naïve café 東京 🙂 \x00\x7f",
               "<|im_start|>user\nhi<|im_end|>\n"] + [_random_text(rng, rng.randint(1, 200)) for _ in range(200)]
    for text in samples:
        ids = tokenizer.encode(text, add_special_tokens=False).ids
        assert tokenizer.decode(ids, skip_special_tokens=False) == text


def test_chat_template_renders_chatml():
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Bye"}]
    expected = ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
                "<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n")
    assert render_chat(messages) == expected
    assert render_chat(messages, add_generation_prompt=True) == expected + "<|im_start|>assistant\n"
    parts = [{"role": "user", "content": [{"type": "text", "text": "H"}, {"type": "text", "text": "i"}]}]
    assert render_chat(parts) == "<|im_start|>user\nHi<|im_end|>\n"
    with pytest.raises(Exception, match="system message must come first"):
        render_chat(messages[1:] + messages[:1])


def test_transformers_loads_tokenizer_and_applies_the_same_template():
    transformers = pytest.importorskip("transformers")
    tok = transformers.AutoTokenizer.from_pretrained(CHECKPOINT_DIR)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2 plus 2?"}]
    for gen in (False, True):
        rendered = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen)
        assert rendered == render_chat(messages, add_generation_prompt=gen)
    assert tok.eos_token == IM_END
    assert tok("Hello world")["input_ids"] == load_tokenizer().encode("Hello world").ids


def test_eval_sets_are_kept_out_of_training_text():
    corpus = data.build_corpus()
    on_disk = {name: data.load_eval_set(name) for name in data.EVAL_SETS}
    assert on_disk == corpus.eval_sets, "data/*.jsonl are stale: rerun python -m aphrodite.modeling.builtin.data"
    train = "\n".join(corpus.train)
    unseen = [r["question"] for r in on_disk["new_facts"]] + [r["answer"] for r in on_disk["new_facts"]]
    for record in on_disk["heldout"]:
        if record["kind"] == "text":
            unseen.append(record["text"])
            continue
        turns = record["messages"]
        unseen += [render_chat([user, answer]) for user, answer in zip(turns, turns[1:]) if user["role"] == "user"]
    leaked = [text for text in unseen if text in train]
    assert not leaked
    missing = [r["answer"] for r in on_disk["general"] if r["answer"] not in train]
    assert not missing


def test_perplexity_of_a_uniform_model_is_the_vocabulary_size():
    vocab = 17

    def uniform(ids: torch.LongTensor) -> torch.Tensor:
        return torch.zeros(1, ids.shape[1], vocab)

    result = perplexity(uniform, [[1, 2, 3], [4, 5], [6]])
    assert result.tokens == 3
    assert result.perplexity == pytest.approx(vocab)


@pytest.fixture
def one_thread():
    # A 5M-parameter model gains nothing from threads, and on a shared CPU extra threads wait on each other.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_heldout_perplexity_with_transformers_matches_eval_json(one_thread):
    transformers = pytest.importorskip("transformers")
    model = transformers.LlamaForCausalLM.from_pretrained(CHECKPOINT_DIR, dtype=torch.float32).eval()
    recorded = read_eval_json()
    measured = heldout_perplexity(lambda ids: model(input_ids=ids).logits)
    assert measured.tokens == recorded["tokens"]
    assert measured.perplexity == pytest.approx(recorded["heldout_perplexity"], rel=0.05)
