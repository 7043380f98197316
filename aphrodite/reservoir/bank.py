"""A bank of equal-sized sub-reservoirs stepped together: one input GEMM, one scan launch.

A plain :class:`~aphrodite.reservoir.Reservoir` is a bank of one; each level of a
:class:`~aphrodite.reservoir.DeepTreeESN` is a bank whose sub-reservoir ``j`` reads the state of
parent ``j // branching`` in the bank above (and optionally the external input).
"""

from __future__ import annotations

import torch

from aphrodite.kernels.reservoir_step import reservoir_scan


class ReservoirBank:
    """R sub-reservoirs of N units: W (R, N, N), bias (R, N), input weights, leak rate.

    Parameters
    ----------
    w : torch.Tensor
        (R, N, N) recurrent weights; float32/float64, or bfloat16 for the kernel.
    bias : torch.Tensor
        (R, N) in the compute dtype.
    lr : float
        Leak rate shared by the bank.
    w_u : torch.Tensor, optional
        (R, N, D) weights from the external input u.
    w_p : torch.Tensor, optional
        (R, N, Np) weights from the parent bank's states.
    branching : int
        Children per parent: ``R == branching * Rp``.
    """

    def __init__(
        self,
        w: torch.Tensor,
        bias: torch.Tensor,
        lr: float,
        w_u: torch.Tensor | None = None,
        w_p: torch.Tensor | None = None,
        branching: int = 1,
    ) -> None:
        if w_u is None and w_p is None:
            raise ValueError("a bank needs input weights from u, from a parent bank, or both")
        self.w, self.bias, self.lr, self.w_u, self.w_p, self.branching = w, bias, lr, w_u, w_p, branching

    @property
    def count(self) -> int:
        return self.w.shape[0]

    @property
    def units(self) -> int:
        return self.w.shape[-1]

    def drive(self, u: torch.Tensor, parent: torch.Tensor | None) -> torch.Tensor:
        """Input projection for all steps at once: ``W_u u_t + W_p p_t + bias``.

        Parameters
        ----------
        u : torch.Tensor
            (B, T, D) external input.
        parent : torch.Tensor, optional
            (Rp, B, T, Np) states of the parent bank (ignored when ``w_p`` is None).

        Returns
        -------
        torch.Tensor
            (R, B, T, N) in ``bias.dtype``.
        """
        B, T, D = u.shape
        R, N = self.count, self.units
        out = None
        if self.w_p is not None and parent is not None:
            Rp, k = parent.shape[0], self.branching
            # children of parent p are p*k .. p*k+k-1: one batched GEMM per parent group
            Np = parent.shape[-1]
            w_grouped = self.w_p.reshape(Rp, k * N, Np)  # (Rp, k*N, Np)
            proj = torch.bmm(parent.reshape(Rp, B * T, Np), w_grouped.transpose(1, 2))  # (Rp, B*T, k*N)
            out = proj.view(Rp, B, T, k, N).permute(0, 3, 1, 2, 4).reshape(R, B, T, N)
        if self.w_u is not None:
            # (B*T, D) @ (D, R*N) + bias: one GEMM feeds every sub-reservoir of the bank
            proj = torch.addmm(self.bias.reshape(1, R * N), u.reshape(B * T, D), self.w_u.reshape(R * N, D).T)
            proj = proj.view(B, T, R, N).permute(2, 0, 1, 3)  # (R, B, T, N), a copy-free view when R == 1
            return proj.contiguous() if out is None else out.add_(proj)
        return out.add_(self.bias[:, None, None, :])

    def scan(self, drive: torch.Tensor, x0: torch.Tensor, lengths: torch.Tensor, backend: str) -> torch.Tensor:
        """Run all steps; returns (R, B, T + 1, N) with slot 0 = x0 (see ``reservoir_scan``)."""
        lr = torch.full((self.count,), self.lr, dtype=drive.dtype, device=drive.device)
        return reservoir_scan(drive, self.w, lr, x0, lengths.to(drive.device), backend=backend)

    def to(self, device: torch.device | str) -> "ReservoirBank":
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return ReservoirBank(move(self.w), move(self.bias), self.lr, move(self.w_u), move(self.w_p), self.branching)
