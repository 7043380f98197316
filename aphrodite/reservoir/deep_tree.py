"""DeepTreeESN: a tree of small sub-reservoirs, one scan launch per tree level.

The root reads the input u; every child reads its parent's states (and u too when
``input_to_children``); the readout sees all sub-reservoir states concatenated, level by level
(breadth-first). Level l holds ``branching ** l`` sub-reservoirs of ``units`` units, stacked into
one :class:`ReservoirBank`, so each level costs one input GEMM and one scan launch whatever its
width. Keep ``units <= 128`` for the kernel's register-resident path (one GPU block each).
"""

from __future__ import annotations

import contextlib
from typing import Any, Sequence

import numpy as np
import torch

from aphrodite.common.cores import FreeCoreMeter, intra_op_threads
from aphrodite.reservoir.bank import ReservoirBank
from aphrodite.reservoir.checkpoint import Checkpointable
from aphrodite.reservoir.matrices import bias_vector, check_echo_state_property, input_matrix, recurrent_matrix
from aphrodite.reservoir.sequences import Series, as_batch
from aphrodite.reservoir.threads import RunThreads, choose_threads, step_flops

_DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16}


class DeepTreeESN(Checkpointable):
    """Tree of leaky-tanh sub-reservoirs; ``run`` returns (…, T, n_reservoirs * units) states.

    Parameters
    ----------
    units : int
        Units per sub-reservoir.
    depth, branching : int
        Number of levels, children per sub-reservoir.
    lr, sr : float
        Leak rate and spectral radius of every sub-reservoir.
    input_scaling, inter_scaling : float
        Scale of the weights from u, and from a parent's state.
    rc_connectivity, input_connectivity : float
        Density of W, and of the input (and parent) weights.
    bias : float
        Bias drawn uniformly in [-bias, bias] (0: no bias, reservoirpy's default).
    input_to_children : bool
        Children read u as well as their parent.
    seed : int, optional
        NumPy seed for every matrix.
    dtype : {"float32", "float64"}
        Compute dtype of drive and states (the Triton kernel needs float32).
    weight_dtype : {"float32", "float64", "bfloat16"}, optional
        Storage of the recurrent W (default: ``dtype``).
    device, backend : str
        Where tensors live; "auto", "triton" or "torch" scan (see ``reservoir_scan``).
    threads : int, optional
        torch intra-op threads of a CPU run. Default: chosen per run, for the input projection and for the
        scan's steps apart, from their work and the cores other processes leave free, never above the
        caller's ``torch.get_num_threads()`` (see ``threads.py``).

    Examples
    --------
    >>> esn = DeepTreeESN(units=32, depth=2, branching=3, sr=0.9, seed=0)
    >>> esn.run(torch.randn(8, 100, 4)).shape  # 1 + 3 sub-reservoirs
    torch.Size([8, 100, 128])
    """

    def __init__(
        self,
        units: int = 64,
        depth: int = 2,
        branching: int = 2,
        lr: float = 1.0,
        sr: float = 0.9,
        input_scaling: float | Sequence[float] = 1.0,
        inter_scaling: float = 1.0,
        rc_connectivity: float = 0.1,
        input_connectivity: float = 0.1,
        bias: float = 0.0,
        input_to_children: bool = False,
        seed: int | None = None,
        input_dim: int | None = None,
        dtype: str = "float32",
        weight_dtype: str | None = None,
        device: str = "cpu",
        backend: str = "auto",
        threads: int | None = None,
    ) -> None:
        if units < 1 or depth < 1 or branching < 1:
            raise ValueError(f"units, depth and branching must be >= 1, got {units}, {depth}, {branching}")
        if not 0.0 < lr <= 1.0:
            raise ValueError(f"lr must lie in (0, 1], got {lr}")
        if dtype not in ("float32", "float64") or (weight_dtype or dtype) not in _DTYPES:
            raise ValueError(f"dtype must be float32/float64 and weight_dtype one of {list(_DTYPES)}")
        self.units, self.depth, self.branching = units, depth, branching
        self.lr, self.sr, self.bias = lr, sr, bias
        self.input_scaling, self.inter_scaling = input_scaling, inter_scaling
        self.rc_connectivity, self.input_connectivity = rc_connectivity, input_connectivity
        self.input_to_children, self.seed = input_to_children, seed
        self.dtype, self.weight_dtype = _DTYPES[dtype], _DTYPES[weight_dtype or dtype]
        self.device, self.backend = torch.device(device), backend
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self.threads = threads
        self._meter: FreeCoreMeter | None = None  # made on the first run that needs it
        self.levels: list[ReservoirBank] = []
        self.state: torch.Tensor | None = None  # (B, output_dim) after the last run
        if input_dim is not None:
            self.initialize(input_dim)

    @property
    def n_reservoirs(self) -> int:
        return sum(self.branching**level for level in range(self.depth))

    @property
    def output_dim(self) -> int:
        return self.n_reservoirs * self.units

    @property
    def input_dim(self) -> int | None:
        return self.levels[0].w_u.shape[-1] if self.levels else None

    def initialize(self, input_dim: int) -> None:
        """Draw every matrix (called by the first ``run`` when ``input_dim`` was not given)."""
        rng = np.random.default_rng(self.seed)
        for level in range(self.depth):
            count, from_u = self.branching**level, level == 0 or self.input_to_children
            w, eig, w_u, w_p, bias = [], [], [], [], []
            for _ in range(count):
                w_j, eig_j = recurrent_matrix(self.units, self.sr, self.rc_connectivity, rng)
                w.append(w_j)
                eig.append(eig_j)
                if from_u:
                    w_u.append(input_matrix(self.units, input_dim, self.input_scaling, self.input_connectivity, rng))
                if level > 0:
                    w_p.append(input_matrix(self.units, self.units, self.inter_scaling, self.input_connectivity, rng))
                bias.append(bias_vector(self.units, self.bias, rng))
            check_echo_state_property(torch.cat(eig), self.lr, where=f"{type(self).__name__} level {level}")
            stack = lambda ts, dt: torch.stack(ts).to(self.device, dt) if ts else None  # noqa: E731
            self.levels.append(
                ReservoirBank(
                    stack(w, self.weight_dtype),
                    stack(bias, self.dtype),
                    self.lr,
                    stack(w_u, self.dtype),
                    stack(w_p, self.dtype),
                    self.branching,
                )
            )

    def reset(self) -> None:
        """Forget the stored state: the next run starts from zeros."""
        self.state = None

    def _initial_state(self, batch: int, x0: torch.Tensor | None) -> torch.Tensor:
        if x0 is None and self.state is not None:
            if self.state.shape[0] not in (1, batch):
                raise ValueError(
                    f"stored state holds {self.state.shape[0]} sequences but this run has {batch}; "
                    "call reset() or pass x0"
                )
            x0 = self.state
        if x0 is None:
            return torch.zeros((batch, self.output_dim), dtype=self.dtype, device=self.device)
        x0 = torch.as_tensor(x0).to(self.device, self.dtype)
        return x0.expand(batch, self.output_dim)

    def run(
        self, u: Series, lengths: Sequence[int] | torch.Tensor | None = None, x0: torch.Tensor | None = None
    ) -> torch.Tensor | list[torch.Tensor]:
        """Run every sequence from ``x0`` (default: the stored state, else zeros).

        Parameters
        ----------
        u : (T, D), (B, T, D) tensor/array, or list of (T_i, D)
            Input series; the output comes back in the same form.
        lengths : (B,) ints, optional
            Valid steps of each row of a padded (B, T, D) batch.
        x0 : (output_dim,) or (B, output_dim), optional
            Initial state (features order).

        Returns
        -------
        States (…, T, output_dim), zero past each length; ``self.state`` holds each sequence's
        final state (B, output_dim).
        """
        batch = as_batch(u, self.dtype, self.device, lengths)
        if not self.levels:
            self.initialize(batch.data.shape[-1])
        if batch.data.shape[-1] != self.input_dim:
            raise ValueError(f"input has {batch.data.shape[-1]} features, the reservoir expects {self.input_dim}")
        B, T, _ = batch.data.shape
        threads = self.run_threads(B, T) if self.device.type == "cpu" else None  # CUDA: kernels, idle CPU threads
        states, self.state = self._forward(batch.data, batch.lengths, self._initial_state(B, x0), threads)
        if batch.ragged:
            states.masked_fill_(~batch.mask()[..., None], 0.0)
        return batch.restore(states)

    def run_threads(self, batch: int, steps: int) -> RunThreads:
        """torch threads a CPU run of ``batch`` x ``steps`` uses now (``threads``, else chosen: ``threads.py``)."""
        if self.threads is not None:
            return RunThreads(self.threads, self.threads)
        if self._meter is None:
            self._meter = FreeCoreMeter()
        flops = step_flops([(bank.count, bank.units) for bank in self.levels], batch)
        values = sum(bank.count * bank.units for bank in self.levels) * batch * steps
        return choose_threads(flops, values, torch.get_num_threads(), self._meter)

    def _forward(
        self, u: torch.Tensor, lengths: torch.Tensor, x0: torch.Tensor, threads: RunThreads | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        def using(n: int) -> contextlib.AbstractContextManager[None]:
            return contextlib.nullcontext() if threads is None else intra_op_threads(n)

        B, T, _ = u.shape
        rows, last = torch.arange(B, device=self.device), lengths.to(self.device)
        outs, parent, offset = [], None, 0
        for bank in self.levels:
            R, N = bank.count, bank.units
            level_x0 = x0[:, offset : offset + R * N].reshape(B, R, N).transpose(0, 1).contiguous()  # (R, B, N)
            with using(threads.drive if threads else 0):
                drive = bank.drive(u, parent)  # (R, B, T, N)
            with using(threads.step if threads else 0):
                out = bank.scan(drive, level_x0, lengths, self.backend)  # (R, B, T+1, N)
            parent, offset = out[:, :, 1:], offset + R * N  # (R, B, T, N)
            outs.append(out)
        # (B, F) and (B, T, F): sub-reservoirs side by side, breadth-first
        final = torch.cat([o[:, rows, last].transpose(0, 1).reshape(B, o.shape[0] * o.shape[3]) for o in outs], 1)
        if len(outs) == 1 and outs[0].shape[0] == 1:
            return outs[0][0, :, 1:], final  # a plain reservoir: a view, no 4 * B*T*N-byte copy
        per_level = [o[:, :, 1:].permute(1, 2, 0, 3).reshape(B, T, o.shape[0] * o.shape[3]) for o in outs]
        return torch.cat(per_level, 2), final

    def config(self) -> dict[str, Any]:
        return {
            "units": self.units, "depth": self.depth, "branching": self.branching, "lr": self.lr,
            "sr": self.sr, "input_scaling": self.input_scaling, "inter_scaling": self.inter_scaling,
            "rc_connectivity": self.rc_connectivity, "input_connectivity": self.input_connectivity,
            "bias": self.bias, "input_to_children": self.input_to_children, "seed": self.seed,
            "dtype": str(self.dtype).removeprefix("torch."),
            "weight_dtype": str(self.weight_dtype).removeprefix("torch."),
            "device": str(self.device), "backend": self.backend, "threads": self.threads,
        }  # fmt: skip

    def state_dict(self) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for i, bank in enumerate(self.levels):
            for name in ("w", "bias", "w_u", "w_p"):
                if getattr(bank, name) is not None:
                    out[f"levels.{i}.{name}"] = getattr(bank, name)
        if self.state is not None:
            out["state"] = self.state
        return out

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        def get(level: int, name: str, dtype: torch.dtype) -> torch.Tensor | None:
            t = state.get(f"levels.{level}.{name}")
            return None if t is None else t.to(self.device, dtype)

        self.levels = [
            ReservoirBank(
                get(i, "w", self.weight_dtype), get(i, "bias", self.dtype), self.lr,
                get(i, "w_u", self.dtype), get(i, "w_p", self.dtype), self.branching,
            )
            for i in range(self.depth)
        ]  # fmt: skip
        self.state = state["state"].to(self.device, self.dtype) if "state" in state else None
