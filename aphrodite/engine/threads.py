"""How many intra-op threads the engine runs with, and how OpenMP's idle threads wait.

On a shared host, a forward pass split over more threads than there are free cores waits at every OpenMP
barrier for a thread the kernel has descheduled; with OpenMP's default (active) wait policy the threads that
did arrive spin while they wait, taking the CPU from the one they wait for. Two measures, both here:

* the thread count defaults to the cores actually free when the engine starts (this process's CPU affinity,
  minus what other processes kept busy over a short sample of /proc/stat), never more than asked for
  (``aphrodite.common.cores``, shared with the reservoir, which chooses its own per run);
* ``OMP_WAIT_POLICY=PASSIVE`` makes waiting threads sleep instead of spin. OpenMP reads it once, when the
  runtime loads with torch, so ``prefer_passive_wait`` must run before the first ``import torch``: the
  ``aphrodite`` command and ``python -m aphrodite.endpoints.openai.api_server`` call it first thing. An
  explicit ``OMP_WAIT_POLICY`` in the environment is kept.

This module imports nothing heavy, so the entry points can import it before torch.
"""

from __future__ import annotations

import os


def prefer_passive_wait(environ: dict[str, str] | None = None) -> str:
    """Set OMP_WAIT_POLICY=PASSIVE unless the user chose one; returns the policy in force. Too late (and
    only reported) once torch is imported."""
    env = os.environ if environ is None else environ
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return env["OMP_WAIT_POLICY"]
