"""Import Triton where a wheel exists, placeholders elsewhere.

Triton ships wheels for Linux x86_64 only. Kernel modules also hold the PyTorch reference that the
CPU path runs, so they must import on macOS and aarch64 too: there ``triton.jit`` becomes the
identity and ``tl.constexpr`` a plain annotation, and ``HAS_TRITON`` tells callers not to launch.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, Callable

try:
    import triton
    import triton.language as tl

    HAS_TRITON = True
except ImportError:  # pragma: no cover - exercised only on platforms without a Triton wheel
    HAS_TRITON = False

    def _identity_jit(fn: Callable | None = None, **_kwargs: Any) -> Any:
        return fn if fn is not None else (lambda f: f)

    triton = SimpleNamespace(jit=_identity_jit, cdiv=lambda a, b: -(-a // b))
    tl = SimpleNamespace(constexpr=object)

__all__ = ["HAS_TRITON", "triton", "tl"]
