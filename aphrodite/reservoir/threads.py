"""How many torch intra-op threads a CPU reservoir run uses: one count for the input projection, one for the scan.

A run is one input GEMM over all steps (``drive``: large, memory-bound, parallel at any count), then, per time
step, one small GEMM (B x N by N x N per sub-reservoir), a tanh and a leak: thousands of parallel regions, each
ending at a barrier. A second thread pays for a step only when its GEMM is large, and a barrier that waits for a
thread the kernel has descheduled (another process on its core) costs milliseconds, a hundred steps' worth. So,
per run (``benchmarks/benchmark_reservoir.py --threads-sweep`` measured the step threshold; ``docs/benchmarks.md``,
"Reservoir"):

* the scan: one thread below ``MIN_PARALLEL_FLOPS`` per step (2 R B N^2 over the sub-reservoirs), whatever the
  host; above it, the cores other processes leave free;
* the input projection: one thread below ``MIN_PARALLEL_DRIVE`` values written (R B T N), else the free cores
  (one parallel region per run: a busy neighbour costs it one barrier, not thousands);
* free cores come from :class:`~aphrodite.common.cores.FreeCoreMeter` (measured since the previous run, without
  blocking), rounded, at least one, and never more than the calling thread's own torch thread count
  (``torch.get_num_threads()``: what ``OMP_NUM_THREADS`` or the caller's ``torch.set_num_threads`` allows). In
  the server the engine owns its threads and the quality predictor calls the reservoir under one thread, so the
  reservoir never adds threads beside the engine's; it only lowers the count, for the run, on its own OS thread,
  and restores it after (:func:`~aphrodite.common.cores.intra_op_threads`).

An explicit ``threads=`` on the reservoir sets both counts instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from aphrodite.common.cores import choose_num_threads

MIN_PARALLEL_FLOPS = 16e6
"""Per-step work below which one thread is as fast as two on the 2-core host measured (float32 and float64)."""
MIN_PARALLEL_DRIVE = 2**20
"""Values of the input projection (R B T N) below which it runs on one thread (4 MiB of float32)."""


@dataclass(frozen=True)
class RunThreads:
    """Intra-op threads of one CPU run."""

    drive: int
    """For the input projection of every step (one GEMM per bank)."""
    step: int
    """For every per-step op of the scan."""


def step_flops(units: list[tuple[int, int]], batch: int) -> float:
    """Multiply-adds x 2 of one scan step: ``units`` holds (sub-reservoirs R, units N) per bank."""
    return float(sum(2 * count * batch * n * n for count, n in units))


def choose_threads(flops: float, drive_values: int, ceiling: int, free: Callable[[], float]) -> RunThreads:
    """Threads for a run of ``flops`` per step and ``drive_values`` projected inputs: one where the work is below
    its threshold (``free`` is then not called), else the free cores, capped at ``ceiling`` (the caller's count)."""
    parallel_step, parallel_drive = flops >= MIN_PARALLEL_FLOPS, drive_values >= MIN_PARALLEL_DRIVE
    if ceiling <= 1 or not (parallel_step or parallel_drive):
        return RunThreads(1, 1)
    n = choose_num_threads(None, ceiling, free())
    return RunThreads(drive=n if parallel_drive else 1, step=n if parallel_step else 1)
