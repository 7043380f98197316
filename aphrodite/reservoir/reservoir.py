"""Reservoir: one pool of leaky-tanh units, batched over many sequences.

``x[t+1] = (1 - lr) x[t] + lr tanh(W_in u[t+1] + W x[t] + bias)``, reservoirpy's update, run for
a whole (B, T, D) batch at once: one input GEMM, then one scan (a Triton launch on CUDA, a
batched-GEMM loop elsewhere). It is the depth-1 case of :class:`DeepTreeESN`.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from aphrodite.reservoir.bank import ReservoirBank
from aphrodite.reservoir.deep_tree import DeepTreeESN
from aphrodite.reservoir.matrices import check_echo_state_property


class Reservoir(DeepTreeESN):
    """Pool of ``units`` leaky-integrator tanh neurons with random recurrent connections.

    Parameters
    ----------
    units : int
        Number of neurons N.
    lr : float
        Leak rate in (0, 1].
    sr : float
        Spectral radius W is rescaled to. Default 0.9, not reservoirpy's 1.0, so that the default
        reservoir passes the echo state property check.
    input_scaling : float or sequence of float
        Gain of W_in (per input feature if a sequence).
    rc_connectivity, input_connectivity : float
        Density of W and of W_in; 1.0 gives dense matrices.
    bias : float
        Bias drawn uniformly in [-bias, bias] (0: none).
    seed : int, optional
        NumPy seed for the matrices.
    dtype, weight_dtype, device, backend, threads
        See :class:`DeepTreeESN` (``threads``: chosen per run by default).

    Examples
    --------
    >>> res = Reservoir(100, lr=0.3, sr=0.9, seed=0)
    >>> states = res.run(torch.randn(64, 1000, 1))  # 64 independent sequences at once
    >>> states.shape, res.state.shape
    (torch.Size([64, 1000, 100]), torch.Size([64, 100]))
    """

    def __init__(
        self,
        units: int,
        lr: float = 1.0,
        sr: float = 0.9,
        input_scaling: float | Sequence[float] = 1.0,
        rc_connectivity: float = 0.1,
        input_connectivity: float = 0.1,
        bias: float = 0.0,
        seed: int | None = None,
        input_dim: int | None = None,
        dtype: str = "float32",
        weight_dtype: str | None = None,
        device: str = "cpu",
        backend: str = "auto",
        threads: int | None = None,
    ) -> None:
        super().__init__(
            units=units, depth=1, branching=1, lr=lr, sr=sr, input_scaling=input_scaling,
            rc_connectivity=rc_connectivity, input_connectivity=input_connectivity, bias=bias, seed=seed,
            input_dim=input_dim, dtype=dtype, weight_dtype=weight_dtype, device=device, backend=backend,
            threads=threads,
        )  # fmt: skip

    @classmethod
    def from_matrices(
        cls,
        W: Any,
        W_in: Any,
        bias: Any = None,
        lr: float = 1.0,
        **kwargs: Any,
    ) -> "Reservoir":
        """Build a reservoir from given matrices (dense or scipy.sparse), e.g. reservoirpy's.

        ``W`` is (N, N), ``W_in`` is (N, D), ``bias`` is (N,), a scalar, or None (zeros).
        The echo state property is checked (and warned about) on the given W.
        """
        def dense(m: Any) -> torch.Tensor:  # scipy.sparse arrays have .toarray()
            return torch.as_tensor(m.toarray() if hasattr(m, "toarray") else m, dtype=torch.float64)

        w, w_in = dense(W), dense(W_in)
        eig = torch.linalg.eigvals(w)
        res = cls(w.shape[0], lr=lr, sr=float(eig.abs().max()), **kwargs)
        b = torch.zeros(res.units, dtype=torch.float64) + (0.0 if bias is None else dense(bias).reshape(-1))
        check_echo_state_property(eig, lr, where="Reservoir.from_matrices")
        res.levels = [
            ReservoirBank(
                w[None].to(res.device, res.weight_dtype), b[None].to(res.device, res.dtype), lr,
                w_u=w_in[None].to(res.device, res.dtype),
            )
        ]  # fmt: skip
        return res

    @property
    def W(self) -> torch.Tensor:
        """Recurrent weights (N, N)."""
        return self.levels[0].w[0]

    @property
    def W_in(self) -> torch.Tensor:
        """Input weights (N, D)."""
        return self.levels[0].w_u[0]

    @property
    def bias_vector(self) -> torch.Tensor:
        """Bias (N,)."""
        return self.levels[0].bias[0]

    def config(self) -> dict[str, Any]:
        cfg = super().config()
        for key in ("depth", "branching", "inter_scaling", "input_to_children"):
            cfg.pop(key)
        return cfg
