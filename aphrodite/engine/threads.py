"""How many intra-op threads the engine runs with, and how OpenMP's idle threads wait.

On a shared host, a forward pass split over more threads than there are free cores waits at every OpenMP
barrier for a thread the kernel has descheduled; with OpenMP's default (active) wait policy the threads that
did arrive spin while they wait, taking the CPU from the one they wait for. Two measures, both here:

* the thread count defaults to the cores actually free when the engine starts (this process's CPU affinity,
  minus what other processes kept busy over a short sample of /proc/stat), never more than asked for;
* ``OMP_WAIT_POLICY=PASSIVE`` makes waiting threads sleep instead of spin. OpenMP reads it once, when the
  runtime loads with torch, so ``prefer_passive_wait`` must run before the first ``import torch``: the
  ``aphrodite`` command and ``python -m aphrodite.endpoints.openai.api_server`` call it first thing. An
  explicit ``OMP_WAIT_POLICY`` in the environment is kept.

This module imports nothing heavy, so the entry points can import it before torch.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path


def prefer_passive_wait(environ: dict[str, str] | None = None) -> str:
    """Set OMP_WAIT_POLICY=PASSIVE unless the user chose one; returns the policy in force. Too late (and
    only reported) once torch is imported."""
    env = os.environ if environ is None else environ
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return env["OMP_WAIT_POLICY"]


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
    stat = Path("/proc/stat")
    try:
        before = stat.read_text()
        time.sleep(sample_s)
        after = stat.read_text()
        return max(0.0, len(cpus) - busy_fraction(before, after, cpus))
    except OSError:
        return max(0.0, len(cpus) - os.getloadavg()[0])


def choose_num_threads(requested: int | None, allowed: int, free: float) -> int:
    """The engine's intra-op threads: ``requested`` when given, else the free cores rounded to the nearest
    whole core, at least one and at most the allowed ones."""
    if requested:
        return requested
    return max(1, min(allowed, int(free + 0.5)))
