"""What continuous learning costs the serving path: the same HTTP load with capture off and on, in one run.

One server with ``--enable-continuous-learning`` takes the same load in alternating rounds (off, on, on,
off, ...), switched by POST /v1/learning/control ``disable``/``enable`` so both conditions share one process
and drift on a shared machine hits both alike ("off" then costs two attribute checks per request). During the
load a probe polls ``/v1/learning/status`` and, as a baseline, ``/v1/models``. Separately, in process: the
per-request work learning adds (observer + monitoring middleware), the time to build the status and metrics
reports with full buffers, and the memory of 10,000 captured interactions (tracemalloc).

    python benchmarks/benchmark_learning_overhead.py                   # tiny random checkpoint
    python benchmarks/benchmark_learning_overhead.py --model DIR --rounds 6
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import random
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine  # noqa: E402

WORDS = "the model learns from every request about cats rivers numbers cities music books weather".split()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all threads (Linux /proc); nan elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q / 100 * len(values)))] if values else float("nan")


# -- HTTP load -------------------------------------------------------------------------------------------------

async def one_request(client: httpx.AsyncClient, url: str, k: int, max_tokens: int) -> float:
    prompt = " ".join(random.Random(k).choice(WORDS) for _ in range(12))
    start = time.perf_counter()
    if k % 2:  # streamed chat
        body = {"messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens, "stream": True,
                "ignore_eos": True}
        async with client.stream("POST", url + "/v1/chat/completions", json=body) as r:
            async for _ in r.aiter_lines():
                pass
            assert r.status_code == 200
    else:  # non-streamed completion
        r = await client.post(url + "/v1/completions",
                              json={"prompt": prompt, "max_tokens": max_tokens, "ignore_eos": True})
        assert r.status_code == 200, r.text
    return time.perf_counter() - start


async def probe(client: httpx.AsyncClient, url: str, stop: asyncio.Event, out: dict[str, list[float]]) -> None:
    while not stop.is_set():
        for path in out:
            start = time.perf_counter()
            r = await client.get(url + path)
            out[path].append(time.perf_counter() - start)
            assert r.status_code == 200, r.text
            await asyncio.sleep(0.01)


async def load_round(url: str, args: argparse.Namespace) -> tuple[float, list[float], dict[str, list[float]]]:
    """Run ``args.requests`` requests at ``args.concurrency``; return (req/s, latencies, probe latencies)."""
    sem = asyncio.Semaphore(args.concurrency)
    probes: dict[str, list[float]] = {"/v1/learning/status": [], "/v1/models": []}
    async with httpx.AsyncClient(timeout=120) as client, httpx.AsyncClient(timeout=30) as probe_client:
        async def limited(k: int) -> float:
            async with sem:
                return await one_request(client, url, k, args.max_tokens)

        stop = asyncio.Event()
        prober = asyncio.create_task(probe(probe_client, url, stop, probes))
        start = time.perf_counter()
        latencies = await asyncio.gather(*(limited(k) for k in range(args.requests)))
        elapsed = time.perf_counter() - start
        stop.set()
        await prober
    return args.requests / elapsed, list(latencies), probes


def http_comparison(args: argparse.Namespace, model_dir: str) -> dict[str, dict]:
    from tests.server_process import RemoteServer

    learning_dir = tempfile.mkdtemp(prefix="bench-learning-")
    results: dict[str, dict] = {name: {"rps": [], "lat": [], "cpu": [], "probe": {"/v1/learning/status": [],
                                                                                   "/v1/models": []}}
                                for name in ("off", "on")}
    with RemoteServer(["--model", model_dir, "--max-model-len", "256", "--enable-continuous-learning",
                       "--learning-dir", learning_dir,
                       "--learning-quality-predictor", args.quality_predictor,
                       # capture is measured here, not training: keep the background learner out of the rounds
                       "--learning-learner", "none"]) as server:
        def switch(name: str) -> None:
            r = httpx.post(server.url + "/v1/learning/control", json={"action": "enable" if name == "on" else "disable"})
            assert r.status_code == 200, r.text

        asyncio.run(load_round(server.url, argparse.Namespace(  # warm-up
            requests=args.concurrency * 4, concurrency=args.concurrency, max_tokens=args.max_tokens)))
        for r in range(args.rounds):
            for name in (("off", "on") if r % 2 == 0 else ("on", "off")):
                switch(name)
                cpu0 = cpu_seconds(server.proc.pid)
                rps, lat, probes = asyncio.run(load_round(server.url, args))
                results[name]["cpu"].append((cpu_seconds(server.proc.pid) - cpu0) / args.requests)
                results[name]["rps"].append(rps)
                results[name]["lat"] += lat
                for path, values in probes.items():
                    results[name]["probe"][path] += values
            print(f"round {r + 1}/{args.rounds}: off {results['off']['rps'][-1]:.1f} req/s, "
                  f"on {results['on']['rps'][-1]:.1f} req/s", file=sys.stderr)
        switch("on")
        stored = httpx.get(server.url + "/v1/learning/metrics").json()["capture"]
    print(f"captured {stored['captured']}, stored {stored['stored']}, dropped {stored['dropped']}", file=sys.stderr)
    return results


# -- in process ------------------------------------------------------------------------------------------------

def sample_request(k: int):
    from aphrodite.common.observers import FinishedRequest

    rng = random.Random(k)
    prompt = " ".join(rng.choice(WORDS) for _ in range(100))  # ~600 characters, ~150 tokens
    text = " ".join(rng.choice(WORDS) for _ in range(90))  # ~550 characters for 128 tokens
    chat = k % 2 == 1
    return FinishedRequest(
        response_id=f"{'chatcmpl' if chat else 'cmpl'}-{k:032x}", endpoint="/v1/chat/completions" if chat
        else "/v1/completions", model="bench", prompt=prompt,
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": prompt}] if chat else None,
        completion_texts=[text], completion_token_ids=[[rng.randrange(32000) for _ in range(128)]],
        finish_reasons=["stop"], prompt_tokens=150, completion_tokens=128, ttft_s=0.02, total_s=0.8,
        weight_version=0, sampling_params={"temperature": 0.7, "top_p": 0.9, "max_tokens": 128, "n": 1},
        stream=chat, api_key_hash="ab" * 32)


def added_cost_us(n: int) -> tuple[list[float], float]:
    """Per-request time of the learning work on the request path (observer call + middleware wrapping), and
    the mean writer-thread time per captured request (scoring + SQLite insert), both in microseconds."""
    from aphrodite.continuous_learning import ContinuousLearningSystem, ServerSideConfig
    from aphrodite.endpoints.middleware import ContinuousLearningMiddleware

    async def main() -> tuple[list[float], float]:
        system = ContinuousLearningSystem(ServerSideConfig(learning_dir=tempfile.mkdtemp(prefix="bench-cl-")))
        await system.start()
        write_batch = system.collector._write_captured
        writer_ns = [0]

        def timed_write(batch) -> None:
            t0 = time.perf_counter_ns()
            write_batch(batch)
            writer_ns[0] += time.perf_counter_ns() - t0

        system.collector.writer._write_batch = timed_write

        async def app(scope, receive, send):
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"{}"})

        async def send(message):
            pass

        wrapped = ContinuousLearningMiddleware(app, system, system.config)
        scope = {"type": "http", "path": "/v1/completions", "method": "POST"}
        requests = [sample_request(k) for k in range(n)]
        costs = []
        for req in requests:
            t0 = time.perf_counter_ns()
            await app(scope, None, send)
            t1 = time.perf_counter_ns()
            await wrapped(scope, None, send)
            system.on_request_finished(req)
            t2 = time.perf_counter_ns()
            costs.append(((t2 - t1) - (t1 - t0)) / 1000.0)
            if len(costs) % 64 == 0:
                await asyncio.sleep(0.001)  # let the writer keep up, as between requests in a server
        await system.collector.writer.call(lambda: None)
        stored = system.collector.counts.interactions
        await system.stop()
        return costs, writer_ns[0] / 1000.0 / max(stored, 1)

    return asyncio.run(main())


def memory_of_interactions(n: int) -> tuple[float, float]:
    """(traced MB, the system's own estimate in MB) held after ``n`` requests were captured and written.

    The requests are made while tracing and dropped after capture, so what is left is what learning holds
    (the recent-interaction buffer, quality scores, monitoring records), texts shared with the requests included.
    """
    from aphrodite.continuous_learning import ContinuousLearningSystem, ServerSideConfig

    async def main() -> tuple[float, float]:
        system = ContinuousLearningSystem(ServerSideConfig(learning_dir=tempfile.mkdtemp(prefix="bench-cl-"),
                                                           max_interaction_buffer=n))
        await system.start()
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        for k in range(n):
            system.on_request_finished(sample_request(k))
            if k % 256 == 0:
                await asyncio.sleep(0)
        await system.collector.writer.call(lambda: None)
        gc.collect()
        traced = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        estimate = system.memory_bytes()
        await system.stop()
        return traced / 1e6, estimate / 1e6

    return asyncio.run(main())


def report_build_ms(n: int) -> dict[str, list[float]]:
    """Time to build (and JSON-encode) the status and metrics reports with full buffers, in process."""
    from fastapi.responses import JSONResponse

    from aphrodite.continuous_learning import ContinuousLearningSystem, ServerSideConfig
    from aphrodite.endpoints.openai.serving_continuous_learning import OpenAIServingContinuousLearning

    async def main() -> dict[str, list[float]]:
        system = ContinuousLearningSystem(ServerSideConfig(learning_dir=tempfile.mkdtemp(prefix="bench-cl-")))
        await system.start()
        for k in range(system.config.max_interaction_buffer):
            system.on_request_finished(sample_request(k))
            system.monitor.record(f"req-{k}", "/v1/completions", "POST", 200, 0.05)
            if k % 256 == 0:
                await asyncio.sleep(0)
        await system.collector.writer.call(lambda: None)
        handler = OpenAIServingContinuousLearning(system)
        times: dict[str, list[float]] = {"status": [], "metrics": []}
        for name, build in (("status", handler.status), ("metrics", handler.metrics)):
            for _ in range(n):
                t0 = time.perf_counter()
                JSONResponse(build())
                times[name].append((time.perf_counter() - t0) * 1e3)
        await system.stop()
        return times

    return asyncio.run(main())


# -- report ----------------------------------------------------------------------------------------------------

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="checkpoint directory (default: a tiny random Llama)")
    ap.add_argument("--requests", type=int, default=200, help="requests per round")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=4, help="rounds per server, alternating")
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--calls", type=int, default=20_000, help="in-process calls for the added-cost measure")
    ap.add_argument("--quality-predictor", default="reservoir", choices=("reservoir", "none"),
                    help="the server's learned quality predictor (reservoir: hidden states flow with capture on)")
    args = ap.parse_args()
    model_dir = args.model
    if model_dir is None:
        from tests.tiny_checkpoints import make_checkpoint

        model_dir = str(make_checkpoint(Path(tempfile.mkdtemp(prefix="bench-tiny-"))))

    costs, writer_us = added_cost_us(args.calls)
    traced_mb, estimate_mb = memory_of_interactions(10_000)
    builds = report_build_ms(500)
    http = http_comparison(args, model_dir)
    off, on = http["off"], http["on"]
    ratios = [b / a for a, b in zip(off["rps"], on["rps"])]  # paired: the two runs of a round are adjacent
    ratio = statistics.median(ratios)
    lat = {name: (pct(http[name]["lat"], 50) * 1e3, pct(http[name]["lat"], 99) * 1e3) for name in http}
    probe = {(name, path): (pct(v, 50) * 1e3, pct(v, 99) * 1e3)
             for name in http for path, v in http[name]["probe"].items()}
    added = pct(costs, 50)
    ok = lambda good: "yes" if good else "NO"  # noqa: E731

    print(f"machine: {machine()}")
    print(f"quality predictor: {args.quality_predictor}")
    print(f"load: {args.rounds} alternating rounds x {args.requests} requests per condition, concurrency "
          f"{args.concurrency}, {args.max_tokens} tokens each, half non-streamed completions, half streamed chat")
    print(f"per-round throughput ratios on/off: {', '.join(f'{r:.3f}' for r in ratios)}")
    print(f"per-round server CPU per request on/off: "
          f"{', '.join(f'{b / a:.3f}' for a, b in zip(off['cpu'], on['cpu']))}")
    print("| metric | capture off | capture on | on/off | target | met |")
    print("|---|---|---|---|---|---|")
    print(f"| throughput (req/s, median of rounds; ratio: median of paired rounds) | "
          f"{statistics.median(off['rps']):.1f} | {statistics.median(on['rps']):.1f} | {ratio:.3f} | >= 0.98 "
          f"| {ok(ratio >= 0.98)} |")
    cpu_off, cpu_on = statistics.median(off["cpu"]) * 1e3, statistics.median(on["cpu"]) * 1e3
    print(f"| server CPU per request (ms, all threads, median of rounds) | {cpu_off:.2f} | {cpu_on:.2f} "
          f"| {cpu_on / cpu_off:.3f} | <= 1.02 | {ok(cpu_on / cpu_off <= 1.02)} |")
    for i, q in enumerate(("p50", "p99")):
        print(f"| request latency {q} (ms) | {lat['off'][i]:.2f} | {lat['on'][i]:.2f} "
              f"| {lat['on'][i] / lat['off'][i]:.3f} | | |")
    print(f"| added work per request p50 / p99 (ms, in process: observer + middleware) | | "
          f"{added / 1e3:.4f} / {pct(costs, 99) / 1e3:.4f} | | p50 < 0.1 | {ok(added < 100)} |")
    print(f"| writer-thread work per captured request (ms, mean: scoring + SQLite insert) | | "
          f"{writer_us / 1e3:.4f} | | | |")
    print(f"| status / metrics report build p99 (ms, in process, full buffers) | | "
          f"{pct(builds['status'], 99):.3f} / {pct(builds['metrics'], 99):.3f} | | < 5 "
          f"| {ok(pct(builds['status'], 99) < 5)} |")
    for path in ("/v1/learning/status", "/v1/models"):
        off_p, on_p = probe[("off", path)], probe[("on", path)]
        target = "p99 < 5" if path == "/v1/learning/status" else "(baseline)"
        met = ok(on_p[1] < 5) if path == "/v1/learning/status" else ""
        print(f"| GET {path} under load p50 / p99 (ms) | {off_p[0]:.2f} / {off_p[1]:.2f} "
              f"| {on_p[0]:.2f} / {on_p[1]:.2f} | | {target} | {met} |")
    print(f"| 10,000 interactions in memory (MB, tracemalloc) | | {traced_mb:.1f} (own estimate "
          f"{estimate_mb:.1f}) | | <= 25 | {ok(traced_mb <= 25)} |")


if __name__ == "__main__":
    main()
