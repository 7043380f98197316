"""vLLM's runtime LoRA routes: load and unload a PEFT adapter, list it in /v1/models and serve it by name."""

from __future__ import annotations

import pytest
import torch
from fastapi.testclient import TestClient

from aphrodite.continuous_learning.learner.versions import VersionStore
from aphrodite.endpoints.cli_args import parse_args
from aphrodite.endpoints.openai.api_server import build_app
from aphrodite.engine.weights import LoRADelta

HEADER = "x-aphrodite-weight-version"
LOCAL = ("127.0.0.1", 50000)  # a loopback client may call admin routes of a server without an admin key


@pytest.fixture(scope="module")
def app(tiny_model_dir):
    return build_app(parse_args(["--model", str(tiny_model_dir), "--served-model-name", "tiny",
                                 "--max-model-len", "64"]))


def save_adapter(engine, root, seed: int):
    """A PEFT LoRA directory (as our learner and peft write it) with random deltas on every projection."""
    targets = engine.model.lora_targets()
    g = torch.Generator().manual_seed(seed)
    deltas = {n: LoRADelta(torch.randn(4, t.in_features, generator=g) * 0.5,
                           torch.randn(t.out_features, 4, generator=g) * 0.5, 2.0)
              for n, t in targets.items() if n.startswith("layers.")}
    store = VersionStore(root, {n: t.output_sizes for n, t in targets.items()}, "tiny")
    store.open()
    return str(store.save(seed, deltas, {}))


def complete(client, model: str):
    return client.post("/v1/completions", json={"model": model, "prompt": "Hello", "max_tokens": 4,
                                                 "temperature": 0, "ignore_eos": True})


def test_load_serve_and_unload_an_adapter(app, tmp_path) -> None:
    with TestClient(app, client=LOCAL) as client:
        engine = app.state.engine
        first = save_adapter(engine.engine, tmp_path / "adapters", 1)
        second = save_adapter(engine.engine, tmp_path / "adapters", 2)
        base = complete(client, "tiny").json()["choices"][0]["text"]

        r = client.post("/v1/load_lora_adapter", json={"lora_name": "sql", "lora_path": first})
        assert r.status_code == 200 and r.text == "Success: LoRA adapter 'sql' added successfully."
        models = client.get("/v1/models").json()["data"]
        assert [(m["id"], m["root"], m["parent"]) for m in models] == [("tiny", "tiny", None), ("sql", first, "tiny")]
        # served by name beside the base model's weights, which still serve the base model's name
        r = complete(client, "sql")
        assert r.status_code == 200 and r.json()["model"] == "sql" and int(r.headers[HEADER]) > 0
        lp = client.post("/v1/completions", json={"model": "sql", "prompt": "Hello", "max_tokens": 4, "temperature": 0,
                                                  "ignore_eos": True, "logprobs": 0}).json()["choices"][0]["logprobs"]
        base_lp = client.post("/v1/completions", json={"model": "tiny", "prompt": "Hello", "max_tokens": 4,
                                                       "temperature": 0, "ignore_eos": True, "logprobs": 0})
        assert base_lp.headers[HEADER] == "0"
        assert lp["token_logprobs"] != base_lp.json()["choices"][0]["logprobs"]["token_logprobs"]

        r = client.post("/v1/load_lora_adapter", json={"lora_name": "sql", "lora_path": second})
        assert r.status_code == 400 and r.json()["error"]["code"] == "lora_exists"
        r = client.post("/v1/load_lora_adapter", json={"lora_name": "sql", "lora_path": second,
                                                        "load_inplace": True, "serve": True})
        assert r.status_code == 200
        r = complete(client, "sql")
        version = int(r.headers[HEADER])
        assert r.status_code == 200 and version == engine.weight_version > 0
        assert r.json()["choices"][0]["text"] != base  # the adapter's weights answered

        r = client.post("/v1/unload_lora_adapter", json={"lora_name": "sql"})
        assert r.status_code == 409 and r.json()["error"]["code"] == "lora_serving"
        client.portal.call(engine.rollback_weights, 0)
        r = client.post("/v1/unload_lora_adapter", json={"lora_name": "sql", "lora_int_id": 7})
        assert r.status_code == 200 and "removed successfully" in r.text
        assert [m["id"] for m in client.get("/v1/models").json()["data"]] == ["tiny"]
        assert complete(client, "sql").status_code == 404
        assert client.post("/v1/unload_lora_adapter", json={"lora_name": "sql"}).status_code == 404


def test_bad_adapters_are_refused_with_a_4xx(app, tmp_path) -> None:
    with TestClient(app, client=LOCAL) as client:
        for path in (str(tmp_path / "none"), "0" * 4000, "a\x00b"):  # absent, a name too long, a NUL byte
            r = client.post("/v1/load_lora_adapter", json={"lora_name": "x", "lora_path": path})
            assert r.status_code == 400 and r.json()["error"]["param"] == "lora_path"
        (tmp_path / "bad").mkdir()
        (tmp_path / "bad" / "adapter_config.json").write_text('{"peft_type": "PREFIX_TUNING"}')
        (tmp_path / "bad" / "adapter_model.safetensors").write_bytes(b"junk")
        r = client.post("/v1/load_lora_adapter", json={"lora_name": "x", "lora_path": str(tmp_path / "bad")})
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_lora_adapter"
        r = client.post("/v1/load_lora_adapter", json={"lora_name": "tiny", "lora_path": str(tmp_path)})
        assert r.status_code == 400 and r.json()["error"]["param"] == "lora_name"
        r = client.post("/v1/load_lora_adapter", json={"lora_name": "../x", "lora_path": str(tmp_path)})
        assert r.status_code in (400, 422)


def test_a_loaded_adapter_is_served_by_name_with_pefts_tokens_and_logprobs(tiny_model_dir, tmp_path) -> None:
    """An adapter written by PEFT, loaded at run time, answers requests naming it as PEFT on transformers does
    (greedy tokens and their log-probabilities), while the base model's name keeps the base answer."""
    peft = pytest.importorskip("peft")
    transformers = pytest.importorskip("transformers")
    app = build_app(parse_args(["--model", str(tiny_model_dir), "--served-model-name", "tiny", "--max-model-len", "64"]))
    engine = app.state.engine
    base = transformers.AutoModelForCausalLM.from_pretrained(engine.model_dir, dtype=torch.float32)
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], lora_dropout=0.0)
    model = peft.get_peft_model(base, config).eval()
    torch.manual_seed(3)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.3)  # PEFT starts B at zero: give the adapter something to do
    model.save_pretrained(tmp_path / "peft-adapter")
    prompt = [5, 17, 42, 9, 80, 33]
    with torch.no_grad():
        ids = model.generate(torch.tensor([prompt]), max_new_tokens=6, do_sample=False, min_new_tokens=6)[0, 6:]
        logits = model(input_ids=torch.tensor([prompt + ids.tolist()])).logits[0, 5:-1]
    want_lp = torch.log_softmax(logits.float(), -1).gather(1, ids[:, None])[:, 0]
    with model.disable_adapter(), torch.no_grad():
        base_ids = model.generate(torch.tensor([prompt]), max_new_tokens=6, do_sample=False, min_new_tokens=6)[0, 6:]
    assert ids.tolist() != base_ids.tolist()  # the adapter really changes the answer

    body = {"prompt": prompt, "max_tokens": 6, "temperature": 0, "ignore_eos": True, "logprobs": 0}
    with TestClient(app, client=LOCAL) as client:
        r = client.post("/v1/load_lora_adapter", json={"lora_name": "peft-ref", "lora_path": str(tmp_path / "peft-adapter")})
        assert r.status_code == 200
        try:
            ours = client.post("/v1/completions", json={**body, "model": "peft-ref"}).json()["choices"][0]
            plain = client.post("/v1/completions", json={**body, "model": "tiny"}).json()["choices"][0]
        finally:
            client.post("/v1/unload_lora_adapter", json={"lora_name": "peft-ref"})
    piece = lambda i: engine.tokenizer.decode([i], skip_special_tokens=False)  # noqa: E731 - as the API names tokens
    assert ours["logprobs"]["tokens"] == [piece(i) for i in ids.tolist()]
    assert plain["logprobs"]["tokens"] == [piece(i) for i in base_ids.tolist()]
    assert torch.allclose(torch.tensor(ours["logprobs"]["token_logprobs"]), want_lp, atol=1e-3)
