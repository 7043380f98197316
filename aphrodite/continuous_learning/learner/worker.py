"""Training off the serving process: a low-priority worker process that maps the served base weights.

Training in the server's own process, even on one thread, competes with the engine for the interpreter
lock and the cores (measured before this worker: 0.57x throughput while a task ran). The worker is a
``spawn``-ed process at ``nice 19`` with one torch thread: the kernel's scheduler gives serving the CPU
first, and no Python lock is shared. It receives the served model's state dict through a
``torch.multiprocessing`` pipe once: the parent moved those tensors to shared memory, so the child maps the
same pages (no copy of the weights) and builds its own model skeleton around them. It never writes them
(training views only attach deltas). While the server has requests in flight (a shared flag the parent polls
from ``busy()`` every 25 ms during a task) it trains only ``duty_cycle`` of the time (``duty.py``): a task
function with a ``before_step`` parameter gets the duty cycle there. It stays alive between tasks (starting
costs seconds of imports); if it dies, the task fails with ``WorkerCrashed`` and the next task starts a new one.

``InThreadRunner`` is the same interface on a thread of the serving process, for a model on a GPU (CUDA
tensors would need CUDA IPC) and for tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import traceback
from typing import Any, Callable

import torch
import torch.multiprocessing as tmp

from aphrodite.continuous_learning.learner.duty import DutyCycle
from aphrodite.modeling.llama import LlamaForCausalLM

logger = logging.getLogger(__name__)
TaskFn = Callable[[LlamaForCausalLM, Any], Any]
"""A top-level (picklable by name) function of the model and a job, e.g. ``train_and_gate``; in the worker it also
gets ``before_step=`` (the duty cycle) when it has that parameter."""
BUSY_POLL_S = 0.025
"""How often the parent refreshes the worker's busy flag while a task runs."""


class WorkerCrashed(RuntimeError):
    """The worker process died during a task (the task is a failure; serving is unaffected)."""


class TaskFailed(RuntimeError):
    """The task raised inside the worker; the message carries its traceback."""


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this worker when the server dies (a ``kill -9`` of the server must not leave an
    orphan training on, holding the shared weights); elsewhere the worker ends at its next pipe read. Linux sends
    it when the thread that started the worker ends: that is a thread of the event loop's default executor,
    which lives as long as the server."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, 9, 0, 0, 0)  # PR_SET_PDEATHSIG = 1, SIGKILL = 9
    except (OSError, AttributeError):
        pass
    if os.getppid() == 1:  # the parent died before the request took effect
        os._exit(1)


def _worker_main(conn: Any, config: Any, niceness: int, busy: Any, duty_cycle: float) -> None:
    _die_with_parent()
    os.nice(niceness)
    torch.set_num_threads(1)
    state = conn.recv()  # shared-memory tensors of the served model
    model = LlamaForCausalLM(config)
    model.load_state_dict(state, strict=False, assign=True)  # map the shared tensors: no copy
    model.requires_grad_(False)
    conn.send(("ready", None))
    while True:
        message = conn.recv()
        if message is None:
            return
        fn, job = message
        duty = DutyCycle(busy, duty_cycle)
        hook = {"before_step": duty} if "before_step" in inspect.signature(fn).parameters else {}
        try:
            conn.send(("ok", (fn(model, job, **hook), duty.slept)))
        except Exception:  # reported to the parent as a failed task; the worker lives on
            conn.send(("error", traceback.format_exc(limit=8)))


class TrainingWorker:
    """Runs task functions one at a time in the low-priority worker process.

    ``busy``: whether serving has requests in flight (polled on the event loop while a task runs); while it
    is true the worker trains ``duty_cycle`` of the time (1.0: flat out always)."""

    def __init__(self, model: LlamaForCausalLM, niceness: int = 19, busy: Callable[[], bool] = lambda: False,
                 duty_cycle: float = 1.0) -> None:
        self.model = model
        self.niceness = niceness
        self.busy = busy
        self.duty_cycle = duty_cycle
        self._busy: Any = None  # the flag shared with the current worker process
        self.paused = 0.0
        """Seconds the last task paused for serving (its duty cycle)."""
        self._proc: Any = None
        self._conn: Any = None
        self._lock = asyncio.Lock()
        self.starts = 0
        """How many worker processes were started (1 + restarts after a crash)."""

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.is_alive()

    async def run(self, fn: TaskFn, job: Any) -> Any:
        """``fn(model, job)`` in the worker; raises ``WorkerCrashed`` or ``TaskFailed``."""
        async with self._lock:
            poller = asyncio.create_task(self._poll_busy())
            try:
                return await asyncio.to_thread(self._run, fn, job)
            finally:
                poller.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await poller

    async def _poll_busy(self) -> None:
        while True:
            if self._busy is not None:
                self._busy.value = bool(self.busy())
            await asyncio.sleep(BUSY_POLL_S)

    def _run(self, fn: TaskFn, job: Any) -> Any:
        if not self.alive:
            self._start()
        try:
            self._conn.send((fn, job))
            result, self.paused = self._receive("ok")
            return result
        except (EOFError, OSError, BrokenPipeError) as exc:
            self._stop()
            raise WorkerCrashed(f"the learning worker died ({exc})") from exc

    def _start(self) -> None:
        self._stop()
        ctx = tmp.get_context("spawn")
        parent, child = ctx.Pipe()
        busy = ctx.Value("b", False, lock=False)  # one writer (the event loop): no lock needed
        proc = ctx.Process(target=_worker_main, args=(child, self.model.config, self.niceness, busy, self.duty_cycle),
                           name="aphrodite-learner", daemon=True)
        proc.start()
        child.close()
        self._proc, self._conn, self._busy = proc, parent, busy
        self.starts += 1
        parent.send(self.model.state_dict())  # tensors already in shared memory (see share_weights)
        self._receive("ready")

    def _receive(self, expected: str) -> Any:
        while not self._conn.poll(0.2):
            if not self._proc.is_alive():
                code = self._proc.exitcode
                self._stop()
                raise WorkerCrashed(f"the learning worker died (exit code {code})")
        kind, payload = self._conn.recv()
        if kind == "error":
            raise TaskFailed(payload)
        if kind != expected:
            raise WorkerCrashed(f"the learning worker answered {kind!r}")
        return payload

    def _stop(self) -> None:
        if self._conn is not None:
            try:
                self._conn.send(None)
            except (OSError, BrokenPipeError):
                pass
            self._conn.close()
        if self._proc is not None:
            self._proc.join(5)
            if self._proc.is_alive():
                self._proc.kill()
                self._proc.join(5)
        self._proc = self._conn = self._busy = None

    async def close(self) -> None:
        async with self._lock:
            await asyncio.to_thread(self._stop)


class InThreadRunner:
    """The worker's interface on a thread of this process (one torch thread while the task runs)."""

    def __init__(self, model: LlamaForCausalLM) -> None:
        self.model = model
        self._lock = asyncio.Lock()

    async def run(self, fn: TaskFn, job: Any) -> Any:
        async with self._lock:
            return await asyncio.to_thread(self._run, fn, job)

    def _run(self, fn: TaskFn, job: Any) -> Any:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # thread-local: the engine thread keeps its own setting
        try:
            return fn(self.model, job)
        finally:
            torch.set_num_threads(threads)

    async def close(self) -> None:
        return None


def share_weights(model: LlamaForCausalLM) -> None:
    """Move the model's parameters and buffers to shared memory, in place (call once, between engine steps)."""
    model.share_memory()
