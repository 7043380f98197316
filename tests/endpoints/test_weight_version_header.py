"""Every completion and chat response names the weight version of its first token; observers get every
version the response saw."""

from __future__ import annotations

import pytest
import torch
from fastapi.testclient import TestClient

from aphrodite.endpoints.cli_args import parse_args
from aphrodite.endpoints.openai.api_server import build_app
from aphrodite.engine.weights import LoRADelta
from tests.continuous_learning.fakes import Recorder

HEADER = "x-aphrodite-weight-version"


@pytest.fixture(scope="module")
def app(tiny_model_dir):
    return build_app(parse_args(["--model", str(tiny_model_dir)]))


def head_delta(engine) -> dict[str, LoRADelta]:
    head = engine.model.lm_head
    g = torch.Generator().manual_seed(0)
    return {"lm_head": LoRADelta(torch.randn(2, head.in_features, generator=g),
                                 torch.randn(head.out_features, 2, generator=g))}


def test_header_on_plain_and_streamed_responses(app) -> None:
    rec = Recorder()
    app.state.request_observers.append(rec)
    body = {"max_tokens": 3, "ignore_eos": True}
    with TestClient(app) as client:
        r = client.post("/v1/completions", json={"prompt": "Hello", **body})
        assert r.status_code == 200 and r.headers[HEADER] == "0"
        r = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "Hi"}], **body})
        assert r.status_code == 200 and r.headers[HEADER] == "0"
        engine = app.state.engine
        client.portal.call(engine.submit_weights, 3, head_delta(engine.engine))
        for path, extra in (("/v1/completions", {"prompt": "Hello"}),
                            ("/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}]})):
            with client.stream("POST", path, json={**extra, **body, "stream": True}) as r:
                assert r.status_code == 200 and r.headers[HEADER] == "3"
                assert any(line.startswith("data: [DONE]") for line in r.iter_lines())
    app.state.request_observers.remove(rec)
    assert [(req.weight_version, req.weight_versions) for req in rec.seen] == [(0, [0]), (0, [0]), (3, [3]), (3, [3])]
