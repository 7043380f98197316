"""The built-in model through our own stack: the engine's loader scores the held-out set as recorded, and
`aphrodite run` with no model serves it to the openai client in the chat format."""

from __future__ import annotations

import subprocess
import sys

import openai
import pytest
import torch

from aphrodite.engine.llm_engine import builtin_model_dir
from aphrodite.modeling.attention import AttentionMetadata
from aphrodite.modeling.builtin.evaluate import heldout_perplexity, read_eval_json
from aphrodite.modeling.loader import load_model
from tests.server_process import RemoteServer


def test_engine_loader_reproduces_the_recorded_heldout_perplexity() -> None:
    model = load_model(builtin_model_dir())
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a 5M-parameter model gains nothing from threads

    def logits_fn(ids: torch.Tensor) -> torch.Tensor:
        T = ids.shape[1]
        meta = AttentionMetadata(True, AttentionMetadata.causal([T], T, ids.device))
        with torch.inference_mode():
            return model.compute_logits(model(ids, torch.arange(T)[None], meta)[0])[None]

    try:
        measured = heldout_perplexity(logits_fn)
    finally:
        torch.set_num_threads(threads)
    recorded = read_eval_json()
    assert measured.tokens == recorded["tokens"]
    assert measured.perplexity == pytest.approx(recorded["heldout_perplexity"], rel=0.05)


@pytest.fixture(scope="module")
def builtin_server():
    with RemoteServer([]) as server:  # no --model: the built-in model
        yield server


def test_serves_the_builtin_model_by_default_and_chats(builtin_server) -> None:
    client = openai.OpenAI(base_url=builtin_server.url + "/v1", api_key="none", max_retries=0)
    assert [m.id for m in client.models.list().data] == ["aphrodite-builtin"]
    reply = client.chat.completions.create(model="aphrodite-builtin", temperature=0, max_tokens=48,
                                           messages=[{"role": "user", "content": "What colour is the sky?"}])
    choice = reply.choices[0]
    # the model ends its turn with <|im_end|> (a natural stop) and the special token is not in the text
    assert choice.finish_reason == "stop" and "<|im_" not in choice.message.content
    words = choice.message.content.split()
    assert 2 <= len(words) <= 40


def test_aphrodite_run_cli_help_and_default_port() -> None:
    out = subprocess.run([sys.executable, "-m", "aphrodite.endpoints.cli", "run", "--help"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0
    assert "--enable-continuous-learning" in out.stdout and "(default: 2242)" in out.stdout
