"""Run Triton kernels through the interpreter on machines without CUDA.

Triton reads TRITON_INTERPRET when ``@triton.jit`` decorates a kernel, i.e. when the kernel
module is imported, so it is set here, while pytest collects this folder and before the test
modules import any kernel. Only CPU-only machines get it (where a compiled launch could not run
anyway), so it cannot slow or change GPU runs of other tests. ``interpreted`` re-imports a kernel
module that something else imported before this conftest ran.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import pytest
import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"


def interpreted(module: ModuleType) -> ModuleType:
    """Return ``module`` with its kernels built for this machine (interpreted when CPU-only)."""
    if torch.cuda.is_available():
        return module
    from triton.runtime.interpreter import InterpretedFunction

    kernels = [v for v in vars(module).values() if type(v).__name__ in ("JITFunction", "InterpretedFunction")]
    if any(not isinstance(k, InterpretedFunction) for k in kernels):
        module = importlib.reload(module)
    return module


@pytest.fixture(autouse=True, scope="module")
def _single_intra_op_thread():
    # small tensors: OpenMP threads only add overhead (and ms-long waits on a busy host)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
