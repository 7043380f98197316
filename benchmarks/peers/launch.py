"""Runs our engine and each peer in its own process, with its own python, on one workload file.

Each peer is a worker script (``worker_*.py``) started with the python of the environment where the peer is
installed: ``--peer-python NAME=PATH``, else ``$APHRODITE_PEER_VENVS/<venv>/bin/python`` (default
``/work/venvs``), else this python. The thread count is fixed through the environment (OpenMP, MKL, vLLM's
core binding) and each worker's own setting, and is reported back. A peer whose library does not import
comes back as "not installed"; one that crashes, as "failed" with its last error line.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Peer:
    """How to start one engine's worker."""

    script: str
    """Worker script beside this module."""
    venv: str | None = None
    """Name of the peer's own virtual environment under $APHRODITE_PEER_VENVS (None: this python)."""
    variant: str = ""
    """Passed to the worker as --variant."""


PEERS = {
    "aphrodite": Peer("worker_aphrodite.py"),
    "hf-generate": Peer("worker_hf.py", variant="generate"),
    "hf-generate-batch": Peer("worker_hf.py", variant="generate-batch"),
    "vllm": Peer("worker_vllm.py", venv="vllm"),
    "llama-cpp": Peer("worker_llamacpp.py", venv="llamacpp"),
}
PEER_NAMES = [name for name in PEERS if name != "aphrodite"]


@dataclass
class PeerResult:
    """What one worker process reported."""

    name: str
    status: str
    """ok, not installed, or failed."""
    seconds: dict[str, float] = field(default_factory=dict)
    """Workload name -> wall seconds for the whole workload."""
    version: str = ""
    detail: str = ""
    threads: int = 0
    wait_policy: str = ""


def peer_python(name: str, overrides: dict[str, str]) -> str | None:
    """The python to start ``name``'s worker with, or None when the named interpreter does not exist."""
    if name in overrides:
        return overrides[name] if Path(overrides[name]).exists() else None
    venv = PEERS[name].venv
    if venv is None:
        return sys.executable
    path = Path(os.environ.get("APHRODITE_PEER_VENVS", "/work/venvs")) / venv / "bin" / "python"
    return str(path) if path.exists() else None


def thread_env(threads: int, base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment that pins a worker's intra-op threads to ``threads`` for every library we run (0: leave
    them to the engine's own default)."""
    env = dict(os.environ if base is None else base)
    env.update(TOKENIZERS_PARALLELISM="false", TRANSFORMERS_VERBOSITY="error")
    if threads == 0:
        return env
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               VLLM_CPU_OMP_THREADS_BIND=f"0-{threads - 1}" if threads > 1 else "0",
               VLLM_CPU_KVCACHE_SPACE=env.get("VLLM_CPU_KVCACHE_SPACE", "4"))
    return env


def parse_result(name: str, stdout: str, stderr: str, returncode: int) -> PeerResult:
    for line in reversed(stdout.splitlines()):
        if line.startswith("PEER-RESULT "):
            data = json.loads(line[len("PEER-RESULT "):])
            return PeerResult(name, data["status"], data.get("seconds", {}), data.get("version", ""),
                              data.get("detail", ""), data.get("threads", 0), data.get("omp_wait_policy", ""))
    tail = [ln for ln in (stderr or stdout).strip().splitlines() if ln.strip()][-1:] or [f"exit {returncode}"]
    return PeerResult(name, "failed", detail=tail[0][:300])


def run_peer(name: str, workloads: Path, model: Path, threads: int, batch: int, gguf: Path | None = None,
             overrides: dict[str, str] | None = None, timeout: float = 1800,
             env: dict[str, str] | None = None) -> PeerResult:
    python = peer_python(name, overrides or {})
    if python is None:
        return PeerResult(name, "not installed", detail="no python for it (see --peer-python)")
    peer = PEERS[name]
    cmd = [python, str(HERE / peer.script), "--workloads", str(workloads), "--model", str(model),
           "--threads", str(threads), "--batch", str(batch), "--variant", peer.variant, "--gguf", str(gguf or "")]
    # output goes to files, not pipes: a peer's helper process that outlives the worker (vLLM's engine core)
    # would hold a pipe open; the worker runs in its own process group, which is killed once it is done
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True, env=thread_env(threads, env),
                                start_new_session=True)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return PeerResult(name, "failed", detail=f"timed out after {timeout:.0f} s")
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        out.seek(0)
        err.seek(0)
        return parse_result(name, out.read(), err.read(), proc.returncode)
