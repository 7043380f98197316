"""How many torch intra-op threads a CPU reservoir run uses.

A run is one input GEMM and then, per time step, one small GEMM (B x N by N x N per sub-reservoir), a tanh and
a leak: thousands of parallel regions, each ending at a barrier. A second thread pays only when a step's GEMM is
large, and a barrier that waits for a thread the kernel has descheduled (another process on its core) costs
milliseconds, a hundred steps' worth. So, per run (``benchmarks/benchmark_reservoir.py --threads-sweep`` measured
the threshold; ``docs/benchmarks.md``, "Reservoir"):

* below ``MIN_PARALLEL_FLOPS`` per step (2 R B N^2 over the sub-reservoirs): one thread, whatever the host;
* above: the cores other processes leave free (:class:`~aphrodite.common.cores.FreeCoreMeter`, measured since
  the previous run without blocking), rounded, at least one;
* never more than the calling thread's own torch thread count (``torch.get_num_threads()``: what
  ``OMP_NUM_THREADS`` or the caller's ``torch.set_num_threads`` allows). In the server the engine owns its
  threads and the quality predictor calls the reservoir under one thread, so the reservoir never adds threads
  beside the engine's; it only lowers the count, for the run, on its own OS thread, and restores it after
  (:func:`~aphrodite.common.cores.intra_op_threads`).

An explicit ``threads=`` on the reservoir overrides all of this.
"""

from __future__ import annotations

from aphrodite.common.cores import FreeCoreMeter, choose_num_threads

MIN_PARALLEL_FLOPS = 16e6
"""Per-step work below which one thread is as fast as two on the 2-core host measured (float32 and float64)."""


def step_flops(units: list[tuple[int, int]], batch: int) -> float:
    """Multiply-adds x 2 of one scan step: ``units`` holds (sub-reservoirs R, units N) per bank."""
    return float(sum(2 * count * batch * n * n for count, n in units))


def choose_threads(flops: float, ceiling: int, meter: FreeCoreMeter) -> int:
    """Threads for a run of ``flops`` per step: one below ``MIN_PARALLEL_FLOPS`` (the meter is not read), else
    the free cores, capped at ``ceiling`` (the caller's thread count)."""
    if flops < MIN_PARALLEL_FLOPS or ceiling <= 1:
        return 1
    return choose_num_threads(None, ceiling, meter())
