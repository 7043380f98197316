"""Measure a freshly trained built-in model and write ``eval.json`` and the model card beside it.

Every figure and sample chat in the card is produced here by the trained model, so the card cannot
drift from the weights it describes.
"""

from __future__ import annotations

import json
import platform
import statistics
import subprocess
import sys
from pathlib import Path

import torch

from aphrodite.modeling.builtin import evaluate as ev
from aphrodite.modeling.builtin.chat_format import IM_END, render_chat
from aphrodite.modeling.builtin.data import load_eval_set
from aphrodite.modeling.builtin.stdlib_text import TRAIN_MODULES

SAMPLE_CHATS = [
    [{"role": "user", "content": "Hello!"}],
    [{"role": "user", "content": "What is the capital of Japan?"}],
    [{"role": "system", "content": "You are a helpful assistant."},
     {"role": "user", "content": "What is 12 plus 7?"}],
    [{"role": "user", "content": "What sound does a cow make?"},
     {"role": "assistant", "content": "A cow moos."},
     {"role": "user", "content": "And a duck?"}],
    [{"role": "user", "content": "What is the opposite of fast?"}],
    [{"role": "user", "content": "What is your name?"}],
    [{"role": "user", "content": "What is the capital of Veloria?"}],
    [{"role": "user", "content": "Write a sentence about Python."}],
]
"""Prompts of the card's sample chats; the Veloria one is a made-up fact the model was never taught."""


@torch.no_grad()
def greedy_reply(model, tokenizer, messages: list[dict[str, str]], max_new_tokens: int = 48) -> str:
    """The model's greedy reply to ``messages``, stopped at ``<|im_end|>``."""
    prompt = tokenizer.encode(render_chat(messages, add_generation_prompt=True), add_special_tokens=False).ids
    input_ids = torch.tensor([prompt])  # (1, T)
    eos = tokenizer.token_to_id(IM_END)
    out = model.generate(input_ids, attention_mask=torch.ones_like(input_ids), max_new_tokens=max_new_tokens,
                         do_sample=False, eos_token_id=eos, pad_token_id=model.config.pad_token_id)
    return tokenizer.decode(out[0, len(prompt):].tolist(), skip_special_tokens=True).strip()


_LOAD_PROBE = """
import sys, time
from transformers import LlamaForCausalLM
start = time.perf_counter()
LlamaForCausalLM.from_pretrained(sys.argv[1])
print(time.perf_counter() - start)
"""


def load_seconds(out: Path, repeats: int = 3) -> float:
    """Median time of a first ``LlamaForCausalLM.from_pretrained(out)`` in a fresh process, import excluded."""
    times = [float(subprocess.run([sys.executable, "-c", _LOAD_PROBE, str(out)], check=True, capture_output=True,
                                  text=True).stdout.split()[-1]) for _ in range(repeats)]
    return statistics.median(times)


def evaluate_and_document(model, out: Path, data_dir: Path, report: dict) -> dict:
    """Add perplexities, fact recall, samples, size and load time to ``report``; write eval.json and README.md."""
    tokenizer = ev.load_tokenizer(out)

    def logits_fn(ids: torch.LongTensor) -> torch.Tensor:
        return model(input_ids=ids).logits

    def answer_fn(question: str) -> str:
        return greedy_reply(model, tokenizer, [{"role": "user", "content": question}])

    for name in ("heldout", "general", "new_facts"):
        report[name] = ev.heldout_perplexity(logits_fn, out, name, data_dir).to_json()
        report[name]["records"] = len(load_eval_set(name, data_dir))
    for name in ("general", "new_facts"):
        report[name]["recall"] = ev.fact_recall(answer_fn, load_eval_set(name, data_dir))
    report["samples"] = [(chat, greedy_reply(model, tokenizer, chat)) for chat in SAMPLE_CHATS]
    report["load_seconds"] = load_seconds(out)
    eval_json = {"heldout_perplexity": report["heldout"]["perplexity"],
                 "tokens": report["heldout"]["tokens"], "mean_nll": report["heldout"]["mean_nll"],
                 "general_perplexity": report["general"]["perplexity"],
                 "general_recall": report["general"]["recall"],
                 "new_facts_perplexity": report["new_facts"]["perplexity"],
                 "new_facts_recall": report["new_facts"]["recall"]}
    (out / "eval.json").write_text(json.dumps(eval_json, indent=2) + "\n")
    (out / "train_report.json").write_text(json.dumps(report, indent=2) + "\n")
    report["files"] = {p.name: p.stat().st_size for p in sorted(out.iterdir()) if p.is_file()}
    (out / "README.md").write_text(render_card(report))
    return report


def _sample_block(chat: list[dict[str, str]], reply: str) -> str:
    lines = [f"**{m['role']}:** {m['content']}  " for m in chat]
    return "\n".join(lines + [f"**assistant (model):** {reply}"])


def render_card(r: dict) -> str:
    """The model card (Markdown) for the run described by report ``r``."""
    c = r["config"]
    total_mb = (sum(r["files"].values()) + 16384) / 1e6  # the card itself, roughly
    samples = "\n\n".join(_sample_block(chat, reply) for chat, reply in r["samples"])
    return CARD.format(
        c=c, r=r, params_m=r["parameters"] / 1e6, total_mb=total_mb,
        train_min=r["train_seconds"] / 60, median_min=r["median_step_seconds"] * c["steps"] / 60, prep_s=r["prepare_seconds"],
        corpus_m=r["corpus_tokens"] / 1e6, seen_m=r["tokens_seen"] / 1e6,
        epochs=r["tokens_seen"] / r["corpus_tokens"], h=r["heldout"], g=r["general"], n=r["new_facts"],
        samples=samples, head=c["hidden_size"] // c["num_attention_heads"],
        py=platform.python_version(), n_mods=len(TRAIN_MODULES),
        nh=r["heldout"]["records"], ng=r["general"]["records"], nn=r["new_facts"]["records"],
    )


CARD = """\
# Echo-tiny: the built-in model of Aphrodite Echo

A {params_m:.1f}M-parameter Llama-architecture chat model that the project trains from scratch on CPU and
ships inside the package (`aphrodite/modeling/builtin/checkpoint/`), so the server, its tests and its
continual-learning work run fully offline. It answers short questions in the ChatML turn format. It is
small and narrow: it knows capitals, animals, colours, opposites, days and months, small sums and a few
science facts, and writes Python-docstring-like prose. It is not a general assistant.

## Model

| field | value |
| --- | --- |
| architecture | `LlamaForCausalLM` (RMSNorm, RoPE theta 10000, SwiGLU, grouped-query attention) |
| parameters | {r[parameters]:,} (embeddings tied with the output layer) |
| layers / hidden / MLP | {c[num_hidden_layers]} / {c[hidden_size]} / {c[intermediate_size]} |
| heads / key-value heads | {c[num_attention_heads]} / {c[num_key_value_heads]} (head size {head}) |
| vocabulary | {c[vocab_size]} (byte-level BPE) |
| max positions | {c[max_position_embeddings]} (trained on {c[seq_len]}-token windows) |
| weights | float32, `model.safetensors` |
| files | {total_mb:.1f} MB in all |
| load time | {r[load_seconds]:.2f} s: median of 3 first `LlamaForCausalLM.from_pretrained` calls, each in a fresh process, import excluded |

Special tokens: `<|endoftext|>` (id 0; bos and pad, also separates training documents), `<|im_start|>`
(id 1), `<|im_end|>` (id 2; eos, ends every turn, generation stops on it). The tokenizer adds no token
on its own; the chat template writes them:

```
<|im_start|>system
You are a helpful assistant.<|im_end|>
<|im_start|>user
What is the capital of Japan?<|im_end|>
<|im_start|>assistant
```

The template (in `tokenizer_config.json`) accepts one leading system message, user and assistant
turns, string or OpenAI-style text-part content, and `add_generation_prompt`.

## Training data

Generated deterministically by `aphrodite/modeling/builtin/data.py` from seed {c[seed]}:
{r[documents]:,} documents, {corpus_m:.2f}M tokens.

| source | what | licence |
| --- | --- | --- |
| `knowledge.py`, `questions.py` | {c[dialogues]:,} generated chats (one to three question/answer turns, 30% with a system prompt) and short fact paragraphs: capitals, languages, animals, colours, opposites, calendar, planets, arithmetic, counting, spelling, science facts, small talk | written for this project, Apache-2.0 |
| Python {py} standard library | docstrings of {n_mods} pure-Python modules, read from source with `ast` (`stdlib_text.py`) | PSF License Agreement v2, which permits redistribution of derived works |

No text was downloaded; nothing comes from the web or from another model.

## Training

`python -m aphrodite.modeling.builtin.train --out aphrodite/modeling/builtin/checkpoint` (the defaults
are this run's settings). AdamW (betas 0.9/0.95, weight decay {c[weight_decay]}), peak learning rate
{c[lr]} after {c[warmup_steps]} warm-up steps, cosine decay to a tenth, gradient clipping at 1.0,
{c[steps]} steps of {c[batch_size]} x {c[seq_len]} tokens = {seen_m:.2f}M tokens ({epochs:.1f} passes
over the corpus), loss on every token. Final training loss (mean of the last 50 steps): {r[final_loss]:.3f}.

Measured training time: **{train_min:.1f} minutes** for the optimisation loop, plus {prep_s:.0f} s to
build the corpus and tokenizer, on {r[threads]} threads of a machine ({r[cpu]}) whose cores other
jobs were also using. The median step took {r[median_step_seconds]:.2f} s, so on idle cores the loop
takes about {median_min:.0f} minutes.

## Evaluation

Token-level perplexity (every token after the first of each record is predicted) with
`aphrodite.modeling.builtin.evaluate`, which takes any `logits_fn(input_ids) -> logits`. The sets are in
`aphrodite/modeling/builtin/data/`; the figures are also in `eval.json`.

| set | what | records | tokens | perplexity | recall |
| --- | --- | --- | --- | --- | --- |
| `heldout.jsonl` | chats whose question/answer pairs were removed from training, and docstrings of modules not trained on | {nh} | {h[tokens]} | **{h[perplexity]:.3f}** | |
| `general.jsonl` | trained facts, one per record, to check later learning does not erase them | {ng} | {g[tokens]} | {g[perplexity]:.3f} | {g[recall]:.0%} |
| `new_facts.jsonl` | made-up facts never in training, for later learning to teach | {nn} | {n[tokens]} | {n[perplexity]:.3f} | {n[recall]:.0%} |

Recall: share of questions whose greedy reply contains the expected keyword.

## Sample chats

Greedy decoding, at most 48 new tokens, produced by this checkpoint at the end of training.

{samples}

## Limitations

The model only knows what the tables above hold, repeats trained phrasings, invents answers for
anything else (see the made-up country above), and its prose outside chats reads like jumbled
docstrings. Use it to exercise the server and the learning machinery, not to answer real questions.

## Licence

Weights, tokenizer and generated data: Apache-2.0, as the project. Docstring text: PSF License v2.
"""
