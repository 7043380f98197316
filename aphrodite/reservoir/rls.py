"""RLS: recursive least squares readout, online, with a forgetting factor."""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch

from aphrodite.reservoir.checkpoint import Checkpointable
from aphrodite.reservoir.sequences import Series, as_batch, device_and_dtype


def _small_solve(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Solve a x = b for a small (k <= 64) system.

    On the CPU this goes through NumPy: torch's MKL LAPACK runs OpenMP threads even at 64 x 64,
    and on a busy host their spin-waits cost milliseconds per call (measured 10 s vs 0.5 s for
    10^5 samples on 2 shared cores); NumPy's OpenBLAS stays single-threaded at this size.
    """
    if a.is_cuda:
        return torch.linalg.solve(a, b)
    return torch.from_numpy(np.linalg.solve(a.numpy(), b.numpy()))


class RLS(Checkpointable):
    """Online linear readout ``y = x @ Wout + bias`` trained by recursive least squares.

    Minimises ``Σ_i λ^(n-i) |y_i - x_i Wout - b|² + λ^n α |[Wout; b]|²``: with ``forgetting``
    λ = 1 and ``alpha`` α equal to Ridge's ``ridge`` it reaches the same solution (bias aside,
    which RLS penalises by α too). The bias is a constant input feature.

    Numerics: P (the inverse information matrix) and the weights are float64; P is symmetrised
    after every update; with λ < 1, directions the inputs never excite grow in P as λ^-n
    ("covariance wind-up") until P loses definiteness. So when trace(P) exceeds ``max_trace``
    (default: its initial value F'/α) the eigenvalues of P are clipped at ``max_trace / F'``
    (1/α by default: no direction looser than the prior), which bounds the trace while leaving
    the excited directions, and so the learning speed, untouched.

    Updates take samples in blocks of up to ``block`` at once with the Woodbury identity, which
    equals that many one-sample updates in exact arithmetic but costs one (k x k) solve.

    Parameters
    ----------
    alpha : float
        Prior precision: P starts at I / alpha.
    forgetting : float
        λ in (0, 1]; 1 keeps all data, 0.999 has a memory of about 1,000 samples.
    fit_bias : bool
        Learn a bias.
    max_trace : float, optional
        Bound on trace(P), enforced by clipping its eigenvalues at ``max_trace / F'``.
    block : int
        Largest block per update.

    Examples
    --------
    >>> x = torch.randn(500, 3, dtype=torch.float64)
    >>> y = x @ torch.tensor([[10.0], [-0.2], [7.0]], dtype=torch.float64) + 12.0
    >>> rls = RLS(alpha=1e-6)
    >>> _ = rls.partial_fit(x, y)  # returns its predictions made before learning each block
    >>> rls.bias.round(decimals=3)
    tensor([12.], dtype=torch.float64)
    """

    def __init__(
        self,
        alpha: float = 1e-6,
        forgetting: float = 1.0,
        fit_bias: bool = True,
        max_trace: float | None = None,
        block: int = 64,
    ) -> None:
        if alpha <= 0 or not 0 < forgetting <= 1 or block < 1:
            raise ValueError(f"need alpha > 0, forgetting in (0, 1], block >= 1; got {alpha}, {forgetting}, {block}")
        self.alpha, self.forgetting, self.fit_bias = alpha, forgetting, fit_bias
        self.max_trace, self.block = max_trace, block
        # keep λ^-(k-1) <= 1e3 inside a block so the (k x k) system stays well scaled
        self._block = block if forgetting == 1 else max(1, min(block, int(1 + math.log(1e3) / -math.log(forgetting))))
        self.reset()

    def reset(self) -> None:
        """Forget everything: P back to I / alpha, weights to zero."""
        self.P: torch.Tensor | None = None  # (F', F'), F' = F + fit_bias
        self.W: torch.Tensor | None = None  # (F', O)
        self.samples = 0

    @property
    def Wout(self) -> torch.Tensor:
        """(F, O) weights."""
        return self.W[: self.W.shape[0] - self.fit_bias]

    @property
    def bias(self) -> torch.Tensor:
        """(O,) bias (zeros without ``fit_bias``)."""
        return self.W[-1] if self.fit_bias else torch.zeros_like(self.W[0])

    @property
    def trace_bound(self) -> float:
        """``max_trace``, or trace(P) at the start (F' / alpha) when it is None."""
        return self.max_trace if self.max_trace is not None else self.P.shape[0] / self.alpha

    def _features(self, X: torch.Tensor) -> torch.Tensor:
        return torch.cat([X, X.new_ones((X.shape[0], 1))], 1) if self.fit_bias else X

    def _init(self, F: int, O: int, device: torch.device) -> None:
        F += self.fit_bias
        self.P = torch.eye(F, dtype=torch.float64, device=device) / self.alpha
        self.W = torch.zeros((F, O), dtype=torch.float64, device=device)

    def _update(self, X: torch.Tensor, Y: torch.Tensor) -> None:
        # X (k, F'), Y (k, O). Block of k samples, sample j weighted λ^(k-1-j) (the newest 1):
        #   Q = P / λ^k,  S = D⁻¹ + X Q Xᵀ,  K = Q Xᵀ S⁻¹,  P ← Q - K X Q,  W ← W + K (Y - X W)
        k, lam = X.shape[0], self.forgetting
        Q = self.P / lam**k
        d_inv = lam ** -torch.arange(k - 1, -1, -1, dtype=torch.float64, device=X.device)  # (k,)
        QXt = Q @ X.T  # (F', k)
        S = torch.diag(d_inv) + X @ QXt  # (k, k), symmetric positive definite
        Kt = _small_solve(S, QXt.T)  # (k, F') = S⁻¹ X Q = Kᵀ
        self.W += Kt.T @ (Y - X @ self.W)
        P = Q - QXt @ Kt
        P = 0.5 * (P + P.T)
        if P.diagonal().sum() > self.trace_bound:
            # clip eigenvalues, do not rescale P: wind-up sits in the unexcited directions, and
            # shrinking all of P would also stall learning in the excited ones
            eig, vec = torch.linalg.eigh(P)
            P = (vec * eig.clamp(max=self.trace_bound / P.shape[0])) @ vec.T
            P = 0.5 * (P + P.T)
        self.P = P

    def partial_fit(
        self, x: Series, y: Series, lengths: Sequence[int] | torch.Tensor | None = None, warmup: int = 0
    ) -> torch.Tensor:
        """Learn from samples in order; returns (M, O) predictions of the valid samples, each made
        with the weights from before its block (a-priori, i.e. before its label was used)."""
        device, dtype = device_and_dtype(x)
        xs = as_batch(x, torch.float64, device, lengths)
        ys = as_batch(y, torch.float64, device, xs.lengths)
        X, Y = self._features(xs.valid_rows(warmup)), ys.valid_rows(warmup)  # (M, F'), (M, O)
        if X.shape[0] != Y.shape[0]:
            raise ValueError(f"x and y hold {X.shape[0]} and {Y.shape[0]} valid steps")
        if self.P is None:
            self._init(X.shape[1] - self.fit_bias, Y.shape[1], X.device)
        preds = torch.empty_like(Y)
        for start in range(0, X.shape[0], self._block):
            Xb, Yb = X[start : start + self._block], Y[start : start + self._block]
            preds[start : start + self._block] = Xb @ self.W
            self._update(Xb, Yb)
        self.samples += X.shape[0]
        return preds.to(dtype)

    def fit(
        self, x: Series, y: Series, lengths: Sequence[int] | torch.Tensor | None = None, warmup: int = 0
    ) -> "RLS":
        """Reset, then learn from all samples in order."""
        self.reset()
        self.partial_fit(x, y, lengths, warmup)
        return self

    def run(self, x: Series, lengths: Sequence[int] | torch.Tensor | None = None) -> torch.Tensor | list[torch.Tensor]:
        """Predict (…, T, O) in ``x``'s dtype."""
        if self.W is None:
            raise RuntimeError("RLS has not seen any sample: call partial_fit first")
        device, dtype = device_and_dtype(x)
        xs = as_batch(x, dtype, device, lengths)
        out = xs.data @ self.Wout.to(xs.data) + self.bias.to(xs.data)
        return xs.restore(out)

    def config(self) -> dict[str, Any]:
        return {
            "alpha": self.alpha, "forgetting": self.forgetting, "fit_bias": self.fit_bias,
            "max_trace": self.max_trace, "block": self.block,
        }  # fmt: skip

    def state_dict(self) -> dict[str, torch.Tensor]:
        if self.P is None:
            return {}
        return {"P": self.P, "W": self.W, "samples": torch.tensor(self.samples)}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.reset()
        if state:
            self.P, self.W = state["P"].to(torch.float64), state["W"].to(torch.float64)
            self.samples = int(state["samples"])
