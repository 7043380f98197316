"""The learning server the operator-facing tests share (console in a browser, ``aphrodite learning``, the
dashboard's metrics): tiny checkpoint, an admin key, learning that a trigger starts and that takes seconds."""

from __future__ import annotations

from pathlib import Path

from tests.server_process import RemoteServer

ADMIN_KEY = "sk-admin-operator-test"


def operator_server_args(model_dir: Path, learning_dir: Path) -> list[str]:
    return ["--model", str(model_dir), "--served-model-name", "tiny", "--max-model-len", "128",
            "--admin-key", ADMIN_KEY, "--enable-continuous-learning", "--learning-dir", str(learning_dir),
            "--learning-background-interval", "3600", "--learning-min-interactions", "1",
            "--learning-canary-share", "0",  # a promotion serves everyone at once (canaries: test_canary_server)
            "--learning-quality-predictor", "none", "--no-learning-learner-protect-shipped-facts",
            "--learning-learner-worker", "thread"]


def start_operator_server(model_dir: Path, learning_dir: Path) -> RemoteServer:
    return RemoteServer(operator_server_args(model_dir, learning_dir))
