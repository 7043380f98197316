"""One intra-op thread for these tests.

Their tensors are small (a few thousand elements per op), where torch's OpenMP threads only add
overhead, and on a busy shared host each parallel region waits for a descheduled thread: we
measured 7.7 ms per 2,560-element tanh with 2 threads against 3 us with 1. Module-scoped, so
it also covers module-scoped fixtures; restored when the module ends.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _single_intra_op_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
