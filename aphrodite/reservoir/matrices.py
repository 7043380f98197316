"""Random reservoir matrices, spectral radius and the echo state property check.

Matrices are drawn in float64 with NumPy's ``default_rng(seed)`` (as reservoirpy does), so a seed
gives the same reservoir on every device and dtype. Sparse initialisation fixes the sparsity
pattern only: the tensors stay dense because the scan runs dense matvecs (a 10%-dense W at
N <= 2048 is faster as a dense GEMM/FMA tile than as gathers).
"""

from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
import torch


class EchoStatePropertyWarning(UserWarning):
    """Effective spectral radius >= 1: inputs may not wash out the initial state."""


def _sparsity_mask(rng: np.random.Generator, shape: tuple[int, int], connectivity: float) -> np.ndarray:
    if not 0.0 < connectivity <= 1.0:
        raise ValueError(f"connectivity must lie in (0, 1], got {connectivity}")
    if connectivity >= 1.0:
        return np.ones(shape, dtype=bool)
    # exactly round(connectivity * size) non-zeros, like scipy.sparse.random
    size = shape[0] * shape[1]
    mask = np.zeros(size, dtype=bool)
    mask[rng.choice(size, size=max(1, round(connectivity * size)), replace=False)] = True
    return mask.reshape(shape)


def _has_cycle(mask: np.ndarray) -> bool:
    # a sparsity pattern without a directed cycle makes W nilpotent (all eigenvalues 0): no
    # spectral radius to rescale, and numerically tiny "eigenvalues" would blow W up
    reach = mask.astype(np.float64)
    for _ in range(max(1, int(np.ceil(np.log2(max(mask.shape[0], 2)))))):
        reach = np.minimum(reach @ reach + reach, 1.0)  # paths of length <= 2^k
    return bool(np.trace(reach) > 0)


def recurrent_matrix(
    units: int, sr: float, rc_connectivity: float, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian W of shape (units, units) rescaled to spectral radius ``sr``.

    Sparsity patterns with no directed cycle (likely for small, very sparse reservoirs) are
    redrawn: such a W has spectral radius 0 and cannot be rescaled.

    Returns
    -------
    W : torch.Tensor
        (units, units) float64.
    eigvals : torch.Tensor
        (units,) complex128 eigenvalues of the rescaled W, for the echo state property check.
    """
    if rc_connectivity * units < 3:
        warnings.warn(
            f"rc_connectivity={rc_connectivity} gives {rc_connectivity * units:.1f} recurrent connections per unit "
            f"({units} units): W is close to nilpotent, and rescaling its small spectral radius to sr can make "
            "some weights very large; use rc_connectivity >= 3 / units",
            stacklevel=3,
        )
    for _ in range(100):
        mask = _sparsity_mask(rng, (units, units), rc_connectivity)
        if _has_cycle(mask):
            break
    else:
        raise ValueError(f"rc_connectivity={rc_connectivity} is too sparse for {units} units: W has no cycle")
    w = rng.standard_normal((units, units)) * mask
    eig = np.linalg.eigvals(w)
    scale = sr / max(float(np.abs(eig).max()), 1e-8)
    return torch.from_numpy(w * scale), torch.from_numpy(eig * scale)


def input_matrix(
    units: int,
    input_dim: int,
    input_scaling: float | Sequence[float],
    input_connectivity: float,
    rng: np.random.Generator,
) -> torch.Tensor:
    """Bernoulli +-1 W_in of shape (units, input_dim), column j scaled by ``input_scaling[j]``."""
    signs = rng.choice([1.0, -1.0], size=(units, input_dim))
    w_in = signs * _sparsity_mask(rng, (units, input_dim), input_connectivity)
    scaling = np.broadcast_to(np.asarray(input_scaling, dtype=np.float64), (input_dim,))
    return torch.from_numpy(w_in * scaling[None, :])


def bias_vector(units: int, bias: float, rng: np.random.Generator) -> torch.Tensor:
    """Uniform bias in [-bias, bias], shape (units,); ``bias=0`` gives zeros (reservoirpy's default)."""
    if bias == 0.0:
        return torch.zeros(units, dtype=torch.float64)
    return torch.from_numpy(rng.uniform(-bias, bias, size=units))


def spectral_radius(w: torch.Tensor) -> float:
    """Largest eigenvalue modulus of a square matrix."""
    return float(torch.linalg.eigvals(w.double().cpu()).abs().max())


def effective_spectral_radius(eigvals: torch.Tensor, lr: float) -> float:
    """Spectral radius of ``(1 - lr) I + lr W`` from the eigenvalues of W (Jaeger et al. 2007)."""
    return float(((1.0 - lr) + lr * eigvals).abs().max())


def check_echo_state_property(eigvals: torch.Tensor, lr: float, where: str = "reservoir") -> float:
    """Warn with :class:`EchoStatePropertyWarning` when the effective spectral radius is >= 1.

    Below 1 the linearised leaky update is contracting, the usual sufficient-in-practice
    condition for the echo state property (with tanh, no bias). At or above 1 strong inputs
    may still make the reservoir useful (reservoirpy's Mackey-Glass example runs at ~1.07),
    so this warns instead of failing.

    Returns
    -------
    float
        The effective spectral radius.
    """
    rho = effective_spectral_radius(eigvals, lr)
    if rho >= 1.0 - 1e-9:  # sr = 1 with lr = 1 lands on 1 +- rounding: warn either way
        warnings.warn(
            f"{where}: effective spectral radius of (1 - lr) I + lr W is {rho:.3f} >= 1 (lr={lr}), so the "
            "echo state property is not guaranteed and the initial state may never wash out; "
            "lower sr or lr to get below 1.",
            EchoStatePropertyWarning,
            stacklevel=3,
        )
    return rho
