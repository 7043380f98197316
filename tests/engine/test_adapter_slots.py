"""Several weight versions in one batch: each sequence runs on the version it was admitted with, to its end."""

from __future__ import annotations

import pytest
import torch

from aphrodite.engine.config import ModelLoadConfig
from aphrodite.engine.llm_engine import LLMEngine
from aphrodite.engine.sampling_params import SamplingParams
from aphrodite.engine.weights import LoRADelta

GREEDY = SamplingParams(temperature=0, max_tokens=24, ignore_eos=True)


@pytest.fixture(scope="module")
def engine(tiny_model_dir) -> LLMEngine:
    return LLMEngine(ModelLoadConfig(model=str(tiny_model_dir), max_resident_versions=3))


def deltas(engine: LLMEngine, seed: int) -> dict[str, LoRADelta]:
    """A strong delta on the LM head and one on an attention projection (the packed, KV-writing path)."""
    g = torch.Generator().manual_seed(seed)
    head, qkv = engine.model.lm_head, engine.model.layers[0].self_attn.qkv_proj
    return {"lm_head": LoRADelta(torch.randn(4, head.in_features, generator=g),
                                 torch.randn(head.out_features, 4, generator=g), scale=2.0),
            "layers.0.self_attn.qkv_proj": LoRADelta(torch.randn(4, qkv.in_features, generator=g),
                                                     torch.randn(qkv.out_features, 4, generator=g), scale=0.5)}


def serve(engine: LLMEngine, version: int, seed: int | None = None) -> None:
    fut = engine.submit_weights(version, deltas(engine, seed)) if seed is not None else engine.rollback_weights(version)
    engine.step()
    assert fut.result(timeout=0) == version


def alone(engine: LLMEngine, prompt: list[int]) -> list[int]:
    return engine.generate([prompt], GREEDY)[0].outputs[0].token_ids


def run_all(engine: LLMEngine) -> dict[str, list]:
    outs: dict[str, list] = {}
    while engine.has_unfinished_requests():
        for out in engine.step():
            outs.setdefault(out.request_id, []).append(out)
    return outs


def test_a_generation_spanning_promotions_keeps_its_version_while_later_requests_get_the_new_one(engine) -> None:
    prompt = engine.tokenizer.encode("One two three four")
    serve(engine, 1, seed=1)
    want = {1: alone(engine, prompt)}
    serve(engine, 2, seed=2)
    want[2] = alone(engine, prompt)
    serve(engine, 3, seed=3)
    want[3] = alone(engine, prompt)
    assert len({tuple(t) for t in want.values()}) == 3  # the versions really differ

    serve(engine, 1)
    engine.add_request("old", prompt, GREEDY)
    for _ in range(4):
        engine.step()
    serve(engine, 2)  # a promotion while "old" runs: it stays on 1, "mid" is admitted on 2
    engine.add_request("mid", prompt, GREEDY)
    for _ in range(4):
        engine.step()
    serve(engine, 3)
    engine.add_request("new", prompt, GREEDY)
    outs = run_all(engine)  # decode steps with rows on three slots at once
    for rid, version in (("old", 1), ("mid", 2), ("new", 3)):
        final = outs[rid][-1]
        assert final.finished and final.outputs[0].token_ids == want[version], rid
        assert final.weight_version == version and final.weight_versions == [version]
    assert not engine.weights.slots.pins  # every pin released
    serve(engine, 0)


def test_when_every_slot_is_busy_a_new_versions_sequences_wait(tiny_model_dir) -> None:
    engine = LLMEngine(ModelLoadConfig(model=str(tiny_model_dir), max_resident_versions=1))
    prompt = engine.tokenizer.encode("One two three four")
    serve(engine, 1, seed=1)
    want1 = alone(engine, prompt)
    engine.add_request("first", prompt, GREEDY)
    engine.step()
    serve(engine, 2, seed=2)  # the only slot holds 1, pinned by "first": 2 cannot be loaded yet
    assert engine.weights.slots.resident() == {0: 1}
    engine.add_request("second", prompt, GREEDY)
    order, finals = [], {}
    while engine.has_unfinished_requests():
        for out in engine.step():
            order.append(out.request_id)
            finals[out.request_id] = out
    assert order.index("second") > len(order) - 1 - order[::-1].index("first")  # waited for "first" to end
    assert finals["first"].outputs[0].token_ids == want1 and finals["second"].weight_versions == [2]
    assert engine.weights.slots.resident() == {0: 2}  # 1 was freed when its last sequence finished
    assert alone(engine, prompt) != want1


def test_a_rolled_back_version_gets_no_new_sequences_and_frees_its_slot(engine) -> None:
    prompt = engine.tokenizer.encode("Five six seven")
    serve(engine, 4, seed=4)
    engine.add_request("on-4", prompt, GREEDY)
    engine.step()
    serve(engine, 0)  # roll back while "on-4" runs
    engine.add_request("on-0", prompt, GREEDY)
    engine.step()
    assert engine.weights.slots.pins == {4: 1, 0: 1}
    outs = run_all(engine)
    assert outs["on-4"][-1].weight_versions == [4] and outs["on-0"][-1].weight_versions == [0]
    assert not engine.weights.slots.pins
    slot_of_4 = engine.weights.slots.slot_of(4)
    serve(engine, 5, seed=5)  # 4 has nothing pinned and does not serve: its slot may be reused
    serve(engine, 6, seed=6)
    serve(engine, 7, seed=7)
    assert engine.weights.slots.slot_of(4) is None and slot_of_4 in engine.weights.slots.resident()
    serve(engine, 0)


def test_a_split_routes_a_share_of_new_requests_sticky_per_user_and_both_run_in_one_batch(engine) -> None:
    from aphrodite.engine.weights import routing_fraction

    prompt = engine.tokenizer.encode("Five six seven")
    serve(engine, 8, seed=8)
    want8 = alone(engine, prompt)
    engine.submit_weights(9, deltas(engine, 9), serve=False)
    engine.split_weights(9, 0.5)
    engine.step()
    users = [f"user-{i}" for i in range(40)]
    canary_users = [u for u in users if routing_fraction(u) < 0.5]
    assert 8 <= len(canary_users) <= 32  # about half
    for i, user in enumerate(users[:6] * 2):  # each user twice
        engine.add_request(f"{user}#{i}", prompt, SamplingParams(temperature=0, max_tokens=8, ignore_eos=True,
                                                                routing_key=user))
    finals = {rid: outs[-1] for rid, outs in run_all(engine).items()}
    by_user: dict[str, set[int]] = {}
    for rid, out in finals.items():
        by_user.setdefault(rid.split("#")[0], set()).add(out.weight_version)
    assert all(len(v) == 1 for v in by_user.values())  # sticky
    assert {u for u, v in by_user.items() if v == {9}} == set(canary_users) & set(users[:6])
    for out in finals.values():
        if out.weight_version == 8:
            assert out.outputs[0].token_ids == want8[:8]
    engine.split_weights(None)
    serve(engine, 0)


def test_named_lineages_run_beside_the_serving_version_in_one_batch(engine) -> None:
    """A request naming a lineage (a loaded adapter, a tenant) runs on that name's version; others on the
    serving one; all in the same steps."""
    prompt = engine.tokenizer.encode("Eight nine ten")
    serve(engine, 20, seed=20)
    want = {"": alone(engine, prompt)}
    for version, name in ((21, "acme"), (22, "globex")):
        serve(engine, version, seed=version)
        want[name] = alone(engine, prompt)
    serve(engine, 20)
    assert len({tuple(t) for t in want.values()}) == 3
    for version, name in ((21, "acme"), (22, "globex")):
        fut = engine.name_weights(name, version)
        engine.step()
        assert fut.result(timeout=0) == version
    for name in ("", "acme", "globex", "unknown"):
        engine.add_request(f"r-{name}", prompt, SamplingParams(temperature=0, max_tokens=24, ignore_eos=True,
                                                              adapter=name or None))
    engine.step()
    assert engine.weights.slots.pins == {20: 2, 21: 1, 22: 1}  # one step admitted all four
    finals = {rid: outs[-1] for rid, outs in run_all(engine).items()}
    assert finals["r-acme"].outputs[0].token_ids == want["acme"] and finals["r-acme"].weight_versions == [21]
    assert finals["r-globex"].outputs[0].token_ids == want["globex"]
    assert finals["r-"].outputs[0].token_ids == want[""] == finals["r-unknown"].outputs[0].token_ids
    stale = engine.name_weights("acme", 22, parent=0)
    engine.step()
    with pytest.raises(ValueError, match="serves it now"):
        stale.result(timeout=0)
    engine.name_weights("acme", None)
    engine.name_weights("globex", None)
    serve(engine, 0)
