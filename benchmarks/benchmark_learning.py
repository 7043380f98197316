"""Continuous learning end to end, in one run, on the built-in model: does it learn, how fast, and what
does learning cost serving?

(a) Effectiveness against an offline anchor: the version the server promoted from one taught fact, against
    the same examples (the job rebuilt with ``JobBuilder``: taught + replay) and the same number of Adam steps
    (those the online task actually took, from its manifest) at the same rank, alpha and rate, trained directly
    with ``peft`` on the ``transformers`` model, with peft's initialisation and with ours. The offline anchor is
    plain SFT; the online objective also has the KL anchor penalty (weight ``learner_anchor_weight``), so it may
    gain less. Gain = drop of the taught answer's loss; goal: online >= 90 % of the offline gain, perplexity on
    the gate's held-out set +<= 2 % over the base model.
(b) Time to learn: from the acknowledgement of a ``/manual`` example to the first chat response whose
    ``x-aphrodite-weight-version`` header names a version that learned it; ``--facts`` made-up facts one after
    another idle, then (after a ``reset`` to the base weights, so each phase is a lineage of ``--facts``
    versions) as many under load; median and p90 of each. A fact the gate refuses three times is set aside by
    the learner and reported as never served.
(c) Swap stall inside the engine: ``LLMEngine.swap_seconds`` with 16 running sequences, p50 / p99.
(d) Serving while learning: 16 streaming clients throughout one phase: an idle window, the ``--facts``
    learning tasks back to back (the learning window: first trigger to last promotion), an idle window;
    output tokens/s and TPOT p99 in the learning window vs the idle windows (goal >= 0.85x and <= 1.3x); the
    idle windows get the same polling requests that ``teach`` makes while it waits, so the windows differ only
    by the learning; and
    the learning tasks' own time idle and under load (their manifests).

    python benchmarks/benchmark_learning.py --plot /tmp/learning_curve.png
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import httpx
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine  # noqa: E402

FACTS = [("What is the capital of Zubrovia?", "The capital of Zubrovia is Pellmor."),
         ("Who painted the Blue Orchard?", "The Blue Orchard was painted by Ilsa Varn.")]
"""The first is the idle phase's first fact (the effectiveness comparison rebuilds its job); the rest come from
the built-in model's made-up facts (``new_facts.jsonl``), never in its training data."""


def facts(n: int) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(idle facts, under-load facts), ``n`` each, all different."""
    from aphrodite.continuous_learning.learner.gate import BUILTIN_DATA
    rows = [json.loads(line) for line in (BUILTIN_DATA / "new_facts.jsonl").read_text().splitlines() if line]
    pool = FACTS + [(r["question"], r["answer"]) for r in rows if r.get("kind") == "qa"]
    if len(pool) < 2 * n:
        raise SystemExit(f"--facts {n}: only {len(pool)} made-up facts available")
    return pool[:n], pool[n:2 * n]
POLL_S = 0.25
"""How often ``teach`` asks for the fact's answer while it waits (the resolution of the time to learn)."""
GIVE_UP_AFTER = 3
"""The learner's ``Backoff.give_up_after``: a fact refused this many times is set aside, so waiting is pointless."""
WORDS = "the model learns from every request about cats rivers numbers cities music books weather".split()


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q / 100 * len(values)))] if values else float("nan")


# -- (c) swap stall -----------------------------------------------------------------------------------------------
def swap_stall(n_seqs: int, swaps: int) -> list[float]:
    from aphrodite.continuous_learning.learner.trainer import default_targets
    from aphrodite.engine.config import ModelLoadConfig
    from aphrodite.engine.llm_engine import LLMEngine
    from aphrodite.engine.sampling_params import SamplingParams
    from aphrodite.engine.weights import LoRADelta

    engine = LLMEngine(ModelLoadConfig())
    prompt = engine.tokenizer.encode("The capital of France is")
    for i in range(n_seqs):
        engine.add_request(f"r{i}", prompt, SamplingParams(max_tokens=swaps + 8, ignore_eos=True))
    g = torch.Generator().manual_seed(0)
    targets = engine.model.lora_targets()
    versions = [{n: LoRADelta(torch.randn(8, targets[n].in_features, generator=g) * 0.01,
                              torch.randn(targets[n].out_features, 8, generator=g) * 0.01, 2.0)
                 for n in default_targets(engine.model)} for _ in range(2)]
    engine.step()  # prefill
    for v in range(1, swaps + 1):
        engine.submit_weights(v, versions[v % 2])  # checked and padded here, outside the stall
        engine.step()
    assert len(engine.scheduler.running) == n_seqs, "the swaps must happen with every sequence running"
    return list(engine.swap_seconds)[-swaps:]


# -- (b, d) the server ------------------------------------------------------------------------------------------
@dataclass
class Done:
    start: float
    end: float
    ttft: float
    tokens: int
    times: list[float]
    """When each output token arrived."""


async def stream_one(client: httpx.AsyncClient, url: str, prompt: str, max_tokens: int) -> Done | None:
    body = {"prompt": prompt, "max_tokens": max_tokens, "stream": True, "ignore_eos": True, "temperature": 0.8}
    start, first, times = time.monotonic(), None, []
    async with client.stream("POST", url + "/v1/completions", json=body) as r:
        if r.status_code != 200:
            return None
        async for line in r.aiter_lines():
            if line.startswith("data: {") and json.loads(line[6:])["choices"][0]["text"]:
                times.append(time.monotonic())
                first = first or times[-1]
    return Done(start, time.monotonic(), (first or start) - start, len(times), times)


async def load(url: str, clients: int, stop: asyncio.Event, done: list[Done], seed: int) -> None:
    rng = random.Random(seed)

    async def client_loop(client: httpx.AsyncClient) -> None:
        while not stop.is_set():
            prompt = " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 24)))
            d = await stream_one(client, url, prompt, rng.randint(32, 96))
            if d is not None:
                done.append(d)

    async with httpx.AsyncClient(timeout=600) as client:
        await asyncio.gather(*(client_loop(client) for _ in range(clients)))


async def learner_report(client: httpx.AsyncClient, url: str) -> dict:
    return (await client.get(url + "/v1/learning/metrics")).json()["learning"]["learner"]


async def teach(client: httpx.AsyncClient, url: str, fact: tuple[str, str], timeout: float,
                refusals: list[str]) -> tuple[float, float, int]:
    """Teach one fact; returns (trigger time, seconds from ack to the first response of a newer version,
    that version). The version is read from the response header of a greedy chat request. A task that the
    gate refuses is recorded in ``refusals``; the fact then waits in the store for the next task (after the
    learner's back-off), so its time to learn includes that wait."""
    before = (await client.get(url + "/v1/learning/status")).json()["weight_version"]
    seen = (await learner_report(client, url))["candidates"]
    r = await client.post(url + "/v1/learning/manual", json={"prompt": fact[0], "response": fact[1],
                                                             "performance_feedback": 1.0,
                                                             "interaction_type": "high_quality_example"})
    acked = time.monotonic()
    assert r.status_code == 200, r.text
    triggered = time.monotonic()
    await client.post(url + "/v1/learning/control", json={"action": "trigger"})
    body = {"messages": [{"role": "user", "content": fact[0]}], "max_tokens": 1, "temperature": 0}
    polls = mine = 0
    while time.monotonic() - acked < timeout:
        r = await client.post(url + "/v1/chat/completions", json=body)
        version = int(r.headers["x-aphrodite-weight-version"])
        if version > before:
            return triggered, time.monotonic() - acked, version
        polls += 1
        if polls % 4 == 0:  # about every second: did the gate refuse a candidate meanwhile?
            report = await learner_report(client, url)
            if report["candidates"] > seen:
                seen = report["candidates"]
                if not report["last"]["accepted"]:
                    refusals.append(f"{fact[0]!r}: {report['last']['reason']}")
                    mine += 1
                    if mine >= GIVE_UP_AFTER:  # the learner sets the batch aside: it will not be learned
                        refusals.append(f"{fact[0]!r}: set aside after {mine} refusals")
                        break
        await asyncio.sleep(POLL_S)
    return triggered, float("nan"), before


async def poll_only(client: httpx.AsyncClient, url: str, question: str, seconds: float) -> None:
    """The requests ``teach`` makes while it waits (a one-token greedy chat every ``POLL_S``, the learner's
    report every fourth), for ``seconds``: the idle windows get the same extra traffic as the learning window."""
    body = {"messages": [{"role": "user", "content": question}], "max_tokens": 1, "temperature": 0}
    end, polls = time.monotonic() + seconds, 0
    while time.monotonic() < end:
        await client.post(url + "/v1/chat/completions", json=body)
        polls += 1
        if polls % 4 == 0:
            await learner_report(client, url)
        await asyncio.sleep(POLL_S)


def window_stats(done: list[Done], t0: float, t1: float) -> tuple[float, float, int, float]:
    """(output tokens/s, TPOT p99 ms, requests, tokens/s by arrival) in [t0, t1].

    The first three count requests wholly inside the window; that misses the tokens of requests that straddle
    its edges (about one request per client per edge), so it reads low, the more so the shorter the window.
    Tokens/s by arrival counts every token that arrived inside the window, whichever request it belongs to.
    """
    inside = [d for d in done if d.start >= t0 and d.end <= t1]
    tokens = sum(d.tokens for d in inside)
    tpot = [(d.end - d.start - d.ttft) / (d.tokens - 1) * 1000 for d in inside if d.tokens > 1]
    span = max((max(d.end for d in inside) - min(d.start for d in inside)) if inside else 0.0, 1e-9)
    arrived = sum(1 for d in done for t in d.times if t0 <= t < t1)
    return tokens / span, pct(tpot, 99), len(inside), arrived / max(t1 - t0, 1e-9)


async def serve_phase(url: str, args) -> dict:
    out: dict = {}
    idle_facts, load_facts = facts(args.facts)
    async with httpx.AsyncClient(timeout=600) as client:
        out["refusals"] = refusals = []
        taught = [await teach(client, url, f, args.learn_timeout, refusals) for f in idle_facts]
        out["ttl_idle"], out["v_idle"] = [t[1] for t in taught], [t[2] for t in taught]
        # each phase teaches its facts to a lineage of its own: the gate's budgets (held-out perplexity and
        # protected answers relative to the base model) are spent by a lineage as it learns more facts
        r = await client.post(url + "/v1/learning/control", json={"action": "reset"})
        assert r.status_code == 200, r.text
        stop, done = asyncio.Event(), []
        loader = asyncio.create_task(load(url, args.clients, stop, done, args.seed))
        await poll_only(client, url, load_facts[0][0], args.idle_window)
        taught = [await teach(client, url, f, args.learn_timeout, refusals) for f in load_facts]
        out["ttl_load"], out["v_load"] = [t[1] for t in taught], [t[2] for t in taught]
        triggered, promoted = taught[0][0], time.monotonic()
        await poll_only(client, url, load_facts[0][0], args.idle_window)
        stop.set()
        await loader
        idle = [window_stats(done, triggered - args.idle_window, triggered),
                window_stats(done, promoted, promoted + args.idle_window)]
        out["idle"] = (statistics.fmean(s[0] for s in idle), max(s[1] for s in idle), sum(s[2] for s in idle),
                       statistics.fmean(s[3] for s in idle))
        out["learning"] = window_stats(done, triggered, promoted)
    return out


# -- (a) effectiveness --------------------------------------------------------------------------------------------
def effectiveness(versions_dir: Path, version: int) -> dict:
    """Rebuild the job the server built for the idle fact (its first task: no parent deltas, seed 0) and compare
    the promoted version with the offline anchor trained for the number of steps the online task took."""
    from aphrodite.continuous_learning.config import ServerSideConfig
    from aphrodite.continuous_learning.learner.job import JobBuilder
    from aphrodite.continuous_learning.learner.policy import OPERATOR, PolicyExample
    from aphrodite.continuous_learning.learner.trainer import attach, default_targets, mean_nll, trainable_view
    from aphrodite.continuous_learning.learner.versions import VersionStore
    from aphrodite.engine.config import ModelLoadConfig
    from aphrodite.engine.llm_engine import LLMEngine

    engine = LLMEngine(ModelLoadConfig())
    store = VersionStore(versions_dir, {n: m.output_sizes for n, m in engine.model.lora_targets().items()}, "")
    manifest = store.manifest(version)
    training, gate = manifest["training"], manifest["gate"]
    builder = JobBuilder(engine.model, engine.tokenizer, ServerSideConfig(), engine.max_model_len)
    taught = PolicyExample("curated", OPERATOR, [{"role": "user", "content": FACTS[0][0]}], FACTS[0][1], True)
    job = builder.build([taught], {}, training["lr"], seed=0)
    heldout = job.reference.heldout
    view = trainable_view(engine.model)
    base = mean_nll(view, job.examples), job.reference.heldout_base_nll
    attach(view, store.load(version))
    online = mean_nll(view, job.examples), mean_nll(view, heldout)

    steps = gate["steps"]  # optimizer steps actually taken (the task stops early once the fact is learned)
    targets = default_targets(engine.model)
    offline = {init: offline_run(job, targets, training, steps, init) for init in ("peft", "ours")}
    return {"base": base, "online": online, "offline": offline, "steps": steps, "max_steps": training["steps"],
            "stop_reason": gate.get("stop_reason", training.get("stop_reason")), "lr": training["lr"],
            "gate_heldout_ratio": gate["heldout"]["perplexity_ratio"], "replay": len(job.replay)}


def offline_run(job, targets: list[str], training: dict, steps: int, init: str) -> dict:
    """The offline anchor: plain SFT on the job's examples (taught + replay), ``steps`` Adam steps at the same
    rank, alpha and rate, with peft on transformers; no KL anchor penalty (the online objective has one).
    ``init`` ``peft``: peft's own initialisation (A kaiming-uniform, about 1/sqrt(in)); ``ours``: A ~ N(0, 1/r)
    drawn as our trainer draws it (one A per packed projection, copied to each of its parts), B = 0.
    Returns the taught loss per step (``curve``) and the final held-out NLL (``heldout``)."""
    import peft
    import transformers

    from aphrodite.continuous_learning.learner.peft_format import PARTS
    from aphrodite.engine.llm_engine import builtin_model_dir

    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_pretrained(builtin_model_dir(), dtype=torch.float32)
    rank = training["rank"]
    names = ["o_proj", "down_proj", *[p for parts in PARTS.values() for p in parts]]
    model = peft.get_peft_model(model, peft.LoraConfig(r=rank, lora_alpha=training["alpha"],
                                                       target_modules=names, lora_dropout=0.0))
    if init == "ours":
        gen = torch.Generator().manual_seed(job.seed)
        modules = dict(model.named_modules())
        with torch.no_grad():
            for name in targets:
                prefix, proj = name.rsplit(".", 1)
                parts = [modules[f"base_model.model.model.{prefix}.{p}"] for p in PARTS.get(proj, (proj,))]
                a = torch.randn(rank, parts[0].in_features, generator=gen) / rank ** 0.5
                for part in parts:
                    part.lora_A["default"].weight.copy_(a)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=training["lr"])
    data = job.examples + job.replay

    def nll(ex, grad: bool) -> torch.Tensor:
        with torch.set_grad_enabled(grad):
            logits = model(input_ids=torch.tensor([ex.ids])).logits[0]
            return torch.nn.functional.cross_entropy(logits[ex.loss_from - 1:-1], torch.tensor(ex.ids[ex.loss_from:]),
                                                     reduction="sum")

    def mean(examples) -> float:
        return sum(nll(ex, False).item() for ex in examples) / sum(ex.scored for ex in examples)

    curve = [mean(job.examples)]
    for _ in range(steps):
        optimizer.zero_grad()
        (sum(nll(ex, True) for ex in data) / sum(ex.scored for ex in data)).backward()
        optimizer.step()
        curve.append(mean(job.examples))
    return {"curve": curve, "heldout": mean(job.reference.heldout)}


def plot(path: str, eff: dict) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"(matplotlib is not installed: no plot written to {path})")
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    for init, run in eff["offline"].items():
        ax.plot(range(len(run["curve"])), run["curve"], marker=".", label=f"offline: peft + transformers, {init} init")
    ax.plot([eff["steps"]], [eff["online"][0]], marker="*", markersize=14, linestyle="none", color="tab:green",
            label=f"online: promoted version ({eff['steps']} steps)")
    ax.axhline(eff["base"][0], color="grey", linestyle="--", label="base model")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("taught answer loss (nats/token)")
    ax.set_title("Learning one taught fact")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    print(f"learning curve written to {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--plot", default=str(Path(tempfile.gettempdir()) / "aphrodite_learning_curve.png"))
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--idle-window", type=float, default=20.0, help="seconds of loaded serving before and after "
                                                                    "the learning task")
    ap.add_argument("--facts", type=int, default=5, help="made-up facts taught one by one in each phase")
    ap.add_argument("--learn-timeout", type=float, default=300.0, help="seconds to wait for each fact's version")
    ap.add_argument("--swaps", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--server-args", default="", help="extra server flags, e.g. '--learning-max-rate 0.001'")
    args = ap.parse_args()
    from tests.server_process import RemoteServer

    print(f"machine: {machine()}")
    stalls = [s * 1000 for s in swap_stall(16, args.swaps)]
    learning_dir = Path(tempfile.mkdtemp(prefix="bench-learning-"))
    server_args = ["--enable-continuous-learning", "--learning-dir", str(learning_dir),
                   "--learning-min-interactions", "1",
                   # the background step every 10 s: after a refused candidate the learner backs off for
                   # 2^n intervals (20 s, 40 s, ...), then the waiting facts go into the next task
                   "--learning-background-interval", "10",
                   "--learning-canary-share", "0",  # time to learn = until the version serves everyone
                   *args.server_args.split()]
    with RemoteServer(server_args, timeout=300) as server:
        res = asyncio.run(serve_phase(server.url, args))
    versions = learning_dir / "versions"
    manifests = {v: json.loads((versions / f"v{v}" / "manifest.json").read_text())
                 for v in res["v_idle"] + res["v_load"] if v > 0 and (versions / f"v{v}").is_dir()}
    seconds = {v: m.get("seconds") for v, m in manifests.items()}
    res["paused"] = {v: m["training"].get("paused_s", 0.0) for v, m in manifests.items()}
    first = res["v_idle"][0]
    eff = effectiveness(versions, first) if first in seconds else None
    report(args, stalls, res, seconds, eff)


def report(args, stalls: list[float], res: dict, seconds: dict, eff: dict | None) -> None:

    print("| measure | value | goal |")
    print("|---|---|---|")
    print(f"| swap stall p50 / p99 (16 running sequences, {args.swaps} swaps) | {pct(stalls, 50):.3f} / "
          f"{pct(stalls, 99):.3f} ms | p99 <= 0.3 ms |")
    counted = Counter(r for r in res["refusals"] if not r.endswith("refusals"))
    reasons = [f"{n} x {r}" for r, n in counted.items()] + [r for r in res["refusals"] if r.endswith("refusals")]
    print(f"| candidates the gate refused during the phases | {sum(counted.values())}"
          f"{': ' + '; '.join(reasons) if reasons else ''} | |")
    def spread(values: list[float]) -> str:
        learned = [v for v in values if not math.isnan(v)]
        missed = f"; {len(values) - len(learned)} never served" if len(learned) < len(values) else ""
        return (f"median {statistics.median(learned):.1f}, p90 {pct(learned, 90):.1f} s "
                f"({', '.join(f'{v:.1f}' for v in values)}{missed})") if learned else "never served"

    print(f"| time to learn, idle, {args.facts} facts one by one (ack -> first response of the new version) | "
          f"{spread(res['ttl_idle'])} | |")
    print(f"| time to learn, under load ({args.clients} streaming clients), {args.facts} facts | "
          f"{spread(res['ttl_load'])} | |")
    paused, nan = res["paused"], float("nan")
    for phase in ("idle", "load"):
        vs = list(dict.fromkeys(v for v in res[f"v_{phase}"] if v in seconds))  # a fact never learned: no version
        print(f"| learning tasks' own time, {'idle' if phase == 'idle' else 'under load'} (paused for serving) | "
              f"{', '.join(f'{seconds[v]:.1f} ({paused.get(v, nan):.1f})' for v in vs) or 'none'} s | |")
    idle, learning = res["idle"], res["learning"]
    print(f"| output tokens/s, requests wholly inside, idle / while learning | {idle[0]:.0f} / {learning[0]:.0f} "
          f"({learning[0] / idle[0]:.2f}x; {idle[2]} / {learning[2]} requests) | >= 0.85x |")
    print(f"| output tokens/s by arrival, idle / while learning | {idle[3]:.0f} / {learning[3]:.0f} "
          f"({learning[3] / idle[3]:.2f}x) | >= 0.85x |")
    print(f"| TPOT p99 idle / while learning | {idle[1]:.1f} / {learning[1]:.1f} ms "
          f"({learning[1] / idle[1]:.2f}x) | <= 1.3x |")
    if eff is not None:
        base, online = eff["base"], eff["online"]
        gain_on = base[0] - online[0]
        print(f"| first idle fact's taught loss base / online ({eff['steps']} of {eff['max_steps']} steps: "
              f"{eff['stop_reason']}; lr {eff['lr']:g}; 1 taught + {eff['replay']} replay) | {base[0]:.3f} / "
              f"{online[0]:.3f} | |")
        for init, run in eff["offline"].items():
            print(f"| offline anchor, {init} init: taught loss / online gain over its gain | {run['curve'][-1]:.3f} "
                  f"/ {gain_on / (base[0] - run['curve'][-1]):.2f} | >= 0.90 |")

        def ppl(nll: float) -> str:
            return f"{100 * (math.exp(nll - base[1]) - 1):+.2f} %"

        offline = ", ".join(f"{init} init {ppl(run['heldout'])}" for init, run in eff["offline"].items())
        print(f"| held-out perplexity vs base: online (gate's own figure) ; offline | {ppl(online[1])} "
              f"({100 * (eff['gate_heldout_ratio'] - 1):+.2f} %) ; {offline} | online <= +2 % |")
        plot(args.plot, eff)
    else:
        print("(no version was promoted from the idle fact: no effectiveness comparison)")


if __name__ == "__main__":
    main()
