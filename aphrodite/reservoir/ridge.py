"""Ridge: Tikhonov-regularised linear readout from running sums, solved on demand."""

from __future__ import annotations

from typing import Any, Sequence

import torch

from aphrodite.reservoir.checkpoint import Checkpointable
from aphrodite.reservoir.sequences import Series, as_batch, device_and_dtype

_SUMS = ("xtx", "xty", "x_sum", "y_sum", "count")


class Ridge(Checkpointable):
    """Linear readout ``y = x @ Wout + bias`` fitted by ridge regression.

    Keeps XᵀX, XᵀY, Σx, Σy and the sample count in float64, so ``partial_fit`` adds data in
    O(F²) memory whatever the number of samples, and the solve happens once, on demand. With
    ``fit_bias`` the sums are centred before solving, so the bias is not penalised (as in
    reservoirpy): ``Wout = (Xcᵀ Xc + ridge I)⁻¹ Xcᵀ Yc``, ``bias = ȳ - x̄ Wout``.

    Parameters
    ----------
    ridge : float
        L2 penalty on Wout.
    fit_bias : bool
        Learn an unpenalised bias.

    Examples
    --------
    >>> x = torch.randn(1000, 3, dtype=torch.float64)
    >>> y = x @ torch.tensor([[10.0], [-0.2], [7.0]], dtype=torch.float64) + 12.0
    >>> readout = Ridge(ridge=1e-6).fit(x, y)
    >>> readout.bias.round(decimals=3)
    tensor([12.], dtype=torch.float64)
    """

    def __init__(self, ridge: float = 0.0, fit_bias: bool = True) -> None:
        if ridge < 0:
            raise ValueError(f"ridge must be >= 0, got {ridge}")
        self.ridge, self.fit_bias = ridge, fit_bias
        self.reset()

    def reset(self) -> None:
        """Drop the sums and the solved weights."""
        self.xtx = self.xty = self.x_sum = self.y_sum = None
        self.count = torch.zeros((), dtype=torch.float64)
        self.Wout: torch.Tensor | None = None  # (F, O)
        self.bias: torch.Tensor | None = None  # (O,)
        self._stale = False

    def partial_fit(
        self, x: Series, y: Series, lengths: Sequence[int] | torch.Tensor | None = None, warmup: int = 0
    ) -> "Ridge":
        """Add samples to the sums (no solve). ``x``: (…, T, F) states, ``y``: (…, T, O) targets.

        ``lengths`` marks padding of batched tensors; ``warmup`` drops each sequence's first steps.
        """
        xs = as_batch(x, torch.float64, device_and_dtype(x)[0], lengths)
        ys = as_batch(y, torch.float64, xs.data.device, xs.lengths)
        X, Y = xs.valid_rows(warmup), ys.valid_rows(warmup)  # (M, F), (M, O)
        if X.shape[0] != Y.shape[0]:
            raise ValueError(f"x and y hold {X.shape[0]} and {Y.shape[0]} valid steps")
        if self.xtx is None:
            F, O = X.shape[1], Y.shape[1]
            self.xtx, self.xty = X.new_zeros((F, F)), X.new_zeros((F, O))
            self.x_sum, self.y_sum = X.new_zeros(F), X.new_zeros(O)
            self.count = self.count.to(X.device)
        self.xtx += X.T @ X
        self.xty += X.T @ Y
        self.x_sum += X.sum(0)
        self.y_sum += Y.sum(0)
        self.count += X.shape[0]
        self._stale = True
        return self

    def fit(
        self, x: Series, y: Series, lengths: Sequence[int] | torch.Tensor | None = None, warmup: int = 0
    ) -> "Ridge":
        """Offline fit: reset, add all samples, solve."""
        self.reset()
        self.partial_fit(x, y, lengths, warmup)
        self.solve()
        return self

    def solve(self) -> None:
        """Solve for Wout and bias from the current sums."""
        if self.xtx is None or self.count == 0:
            raise RuntimeError("Ridge has no samples: call fit or partial_fit first")
        xtx, xty = self.xtx.clone(), self.xty.clone()
        if self.fit_bias:
            x_mean, y_mean = self.x_sum / self.count, self.y_sum / self.count
            xtx -= self.count * torch.outer(x_mean, x_mean)
            xty -= self.count * torch.outer(x_mean, y_mean)
        xtx.diagonal().add_(self.ridge)
        self.Wout = torch.linalg.solve(xtx, xty)
        self.bias = y_mean - x_mean @ self.Wout if self.fit_bias else torch.zeros_like(self.y_sum)
        self._stale = False

    def run(self, x: Series, lengths: Sequence[int] | torch.Tensor | None = None) -> torch.Tensor | list[torch.Tensor]:
        """Predict (…, T, O) in ``x``'s dtype; solves first if samples arrived since the last solve."""
        if self._stale or self.Wout is None:
            self.solve()
        device, dtype = device_and_dtype(x)
        xs = as_batch(x, dtype, device, lengths)
        out = xs.data @ self.Wout.to(xs.data) + self.bias.to(xs.data)
        return xs.restore(out)

    def config(self) -> dict[str, Any]:
        return {"ridge": self.ridge, "fit_bias": self.fit_bias}

    def state_dict(self) -> dict[str, torch.Tensor]:
        if self.xtx is None:
            return {}
        if self._stale or self.Wout is None:
            self.solve()
        out = {name: getattr(self, name) for name in _SUMS}
        out.update(Wout=self.Wout, bias=self.bias)
        return out

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.reset()
        if state:
            for name in (*_SUMS, "Wout", "bias"):
                setattr(self, name, state[name].to(torch.float64))

