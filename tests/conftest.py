from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# Triton reads TRITON_INTERPRET when a kernel is decorated, i.e. when its module is first imported, which may
# happen in any test folder (the learning tests import the reservoir): set it before any test module loads.
# CPU-only machines run the kernels in the interpreter; a CUDA machine compiles them.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from tests.tiny_checkpoints import make_checkpoint


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama checkpoint with a ChatML tokenizer, shared by the whole session."""
    return make_checkpoint(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def postgres():
    """A PostgreSQL server for the session (see tests/postgres_server.py); its ``url`` is the admin URL.

    With ``$APHRODITE_TEST_POSTGRES_URL`` set, that server is used instead (and outage tests, which stop and
    start the server, are skipped)."""
    from tests.postgres_server import URL_ENV, TestPostgres

    url = os.environ.get(URL_ENV)
    if url:
        yield type("ExternalPostgres", (), {"url": url, "stop": None, "start": None})()
        return
    server = TestPostgres()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def operator_server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """One learning server shared by the console, CLI and dashboard tests (tests/operator_server.py)."""
    from tests.operator_server import start_operator_server

    with start_operator_server(tiny_model_dir, tmp_path_factory.mktemp("operator") / "learning") as server:
        yield server
