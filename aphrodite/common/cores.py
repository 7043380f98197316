"""Free cores on a shared host, and intra-op thread counts chosen from them (the engine's and the reservoir's).

On a shared host, work split over more threads than there are free cores waits at every OpenMP barrier for a
thread the kernel has descheduled. So a thread count defaults to the cores actually free: this process's CPU
affinity, less what *other* processes kept busy (``/proc/stat`` per CPU), never more than asked for.

Two ways to measure: :func:`free_cores` samples for a moment (the engine, once, at start: this process is idle
meanwhile); :class:`FreeCoreMeter` measures between calls without blocking, subtracting this process's own CPU
time (a reservoir run, every run: sampling 0.2 s before a 0.1 s run would cost more than it saves), and on its
first call counts the tasks running at that instant.

torch's thread count is per OS thread once set (OpenMP's ``nthreads`` and MKL's local setting), but a thread
that starts using torch later takes the last value any thread set; :func:`intra_op_threads` sets it for a block
and restores the caller's value, so the process-wide default is left as it was.

Nothing heavy is imported at module level (torch only inside :func:`intra_op_threads`), so entry points can use
this module before torch loads.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

_STAT = Path("/proc/stat")


def allowed_cpus() -> list[int]:
    """CPUs this process may run on (its affinity mask; every CPU where the platform has none)."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return list(range(os.cpu_count() or 1))


def _cpu_times(stat: str) -> dict[int, tuple[int, int]]:
    """/proc/stat text -> cpu index -> (busy jiffies, total jiffies)."""
    times = {}
    for line in stat.splitlines():
        name, *fields = line.split()
        if not name.startswith("cpu") or name == "cpu":
            continue
        values = [int(v) for v in fields[:8]]
        idle = values[3] + values[4]  # idle + iowait
        times[int(name[3:])] = (sum(values) - idle, sum(values))
    return times


def busy_fraction(before: str, after: str, cpus: list[int]) -> float:
    """Busy CPUs (0..len(cpus)) among ``cpus`` between two /proc/stat readings."""
    a, b = _cpu_times(before), _cpu_times(after)
    busy = 0.0
    for cpu in cpus:
        if cpu in a and cpu in b:
            total = b[cpu][1] - a[cpu][1]
            busy += (b[cpu][0] - a[cpu][0]) / total if total > 0 else 0.0
    return busy


def free_cores(sample_s: float = 0.2) -> float:
    """Cores among this process's allowed CPUs that other processes left idle over ``sample_s`` seconds
    (this process is idle while it samples). Falls back to the 1-minute load average without /proc/stat."""
    cpus = allowed_cpus()
    try:
        before = _STAT.read_text()
        time.sleep(sample_s)
        after = _STAT.read_text()
        return max(0.0, len(cpus) - busy_fraction(before, after, cpus))
    except OSError:
        return max(0.0, len(cpus) - os.getloadavg()[0])


def choose_num_threads(requested: int | None, allowed: int, free: float) -> int:
    """Intra-op threads: ``requested`` when given, else the free cores rounded to the nearest whole core, at
    least one and at most ``allowed``."""
    if requested:
        return requested
    return max(1, min(allowed, int(free + 0.5)))


class FreeCoreMeter:
    """Free cores over the time since the previous call: all CPUs' busy time less this process's own.

    It never blocks. The first call (or one after ``max_age_s`` without a call, when the interval would
    describe the past) counts the tasks running right now instead (/proc/loadavg, less this one); calls closer
    together than ``min_interval_s`` return the last estimate, since /proc/stat counts in 10 ms ticks. Not
    thread-safe: one meter per caller.
    """

    def __init__(self, min_interval_s: float = 0.05, max_age_s: float = 10.0,
                 read_stat: Callable[[], str] = _STAT.read_text,
                 read_loadavg: Callable[[], str] = Path("/proc/loadavg").read_text,
                 clock: Callable[[], float] = time.monotonic, cpu_clock: Callable[[], float] = time.process_time,
                 cpus: list[int] | None = None) -> None:
        self.min_interval_s, self.max_age_s = min_interval_s, max_age_s
        self._read_stat, self._read_loadavg, self._clock, self._cpu_clock = read_stat, read_loadavg, clock, cpu_clock
        self.cpus = allowed_cpus() if cpus is None else cpus
        self._last: tuple[float, float, str] | None = None
        """(wall clock, this process's CPU seconds, /proc/stat text) at the previous reading."""
        self.free: float = float(len(self.cpus))
        """The last estimate."""

    def _reading(self) -> tuple[float, float, str]:
        return self._clock(), self._cpu_clock(), self._read_stat()

    def __call__(self) -> float:
        now = self._clock()
        if self._last is not None and now - self._last[0] < self.min_interval_s:
            return self.free
        try:
            reading = self._reading()
            if self._last is None or now - self._last[0] > self.max_age_s:
                running = int(self._read_loadavg().split()[3].split("/")[0])  # "0.50 0.40 0.30 3/412 9876"
                self._last, self.free = reading, max(0.0, len(self.cpus) - max(0, running - 1))
                return self.free
        except (OSError, ValueError, IndexError):  # no /proc: the load average, which counts this process too
            return max(0.0, len(self.cpus) - os.getloadavg()[0])
        (t0, cpu0, stat0), (t1, cpu1, stat1) = self._last, reading
        own = (cpu1 - cpu0) / (t1 - t0) if t1 > t0 else 0.0
        others = max(0.0, busy_fraction(stat0, stat1, self.cpus) - own)
        self._last, self.free = reading, max(0.0, len(self.cpus) - others)
        return self.free


@contextlib.contextmanager
def intra_op_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads on this OS thread, then restore the caller's count."""
    import torch

    before = torch.get_num_threads()
    if n == before:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
