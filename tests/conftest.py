from __future__ import annotations

from pathlib import Path

import pytest

from tests.tiny_checkpoints import make_checkpoint


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama checkpoint with a ChatML tokenizer, shared by the whole session."""
    return make_checkpoint(tmp_path_factory.mktemp("tiny-llama"))
