"""Runs the engine loop on its own thread and gives each request an async stream of outputs.

The event loop never runs model code: requests and aborts go to the engine through its safe-point inbox;
outputs come back with one ``call_soon_threadsafe`` per step.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import AsyncIterator, Callable, TypeVar

import torch

from aphrodite.engine.llm_engine import LLMEngine
from aphrodite.engine.outputs import RequestOutput
from aphrodite.engine.sampling_params import SamplingParams

logger = logging.getLogger(__name__)
T = TypeVar("T")


class EngineDeadError(RuntimeError):
    """The engine loop stopped; no further requests can be served."""


class AsyncEngine:
    """An ``LLMEngine`` driven by a background thread, with per-request async output streams."""

    def __init__(self, engine: LLMEngine) -> None:
        self.engine = engine
        self._streams: dict[str, asyncio.Queue] = {}
        self._wake = threading.Event()
        self._stop = False
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.errored: BaseException | None = None

    # the narrow surface the serving and learning layers use
    @property
    def model_name(self) -> str:
        return self.engine.model_name

    @property
    def tokenizer(self):
        return self.engine.tokenizer

    @property
    def model_dir(self):
        return self.engine.model_dir

    @property
    def max_model_len(self) -> int:
        return self.engine.max_model_len

    @property
    def device(self) -> str:
        return self.engine.device

    @property
    def weight_version(self) -> int:
        return self.engine.weight_version

    @property
    def is_running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and self.errored is None

    def validate_request(self, prompt_token_ids: list[int], params: SamplingParams) -> SamplingParams:
        """Raise the client's error now (too long, bad ids) rather than mid-stream; returns resolved params."""
        return self.engine.validate_request(prompt_token_ids, params)

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="aphrodite-engine", daemon=True)
        self._thread.start()

    async def shutdown(self) -> None:
        self._stop = True
        self._wake.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 10)

    def _run(self) -> None:
        # torch's thread count is per OS thread, and a new thread takes the last count any thread set (a learning
        # thread's one, say): this thread sets the engine's own before its first forward pass
        torch.set_num_threads(self.engine.num_threads)
        try:
            while not self._stop:
                if not self.engine.has_pending_work():
                    self._wake.wait(0.5)
                    self._wake.clear()
                    continue
                outputs = self.engine.step()
                if outputs:
                    self._loop.call_soon_threadsafe(self._dispatch, outputs)
        except BaseException as e:  # noqa: BLE001 - reported to every waiting stream
            logger.exception("engine loop died")
            self.errored = e
            self._loop.call_soon_threadsafe(self._fail_all, e)

    def _dispatch(self, outputs: list[RequestOutput]) -> None:
        for out in outputs:
            q = self._streams.get(out.request_id)
            if q is not None:
                q.put_nowait(out)

    def _fail_all(self, error: BaseException) -> None:
        for q in self._streams.values():
            q.put_nowait(EngineDeadError(str(error)))

    async def run_at_safe_point(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the engine thread between two steps and await its result."""
        fut = self.engine.call_at_safe_point(fn)
        self._wake.set()
        return await asyncio.wrap_future(fut)

    async def submit_weights(self, version: int, deltas: dict, serve: bool = True, parent: int | None = None) -> int:
        """Keep ``version`` (LoRA deltas by projection name) and, if ``serve``, serve it from the next engine
        step on; returns the version serving afterwards. Checking and padding run on a worker thread. With
        ``parent``, it is refused (``StaleParent``) unless ``parent`` still serves at the swap."""
        prepared = await asyncio.to_thread(self.engine.weights.prepare, deltas)
        await asyncio.to_thread(self.engine.weights.stage, version, prepared)  # the copy, off the event loop
        fut = self.engine.swap_in(version, prepared, serve, parent)
        self._wake.set()
        return await asyncio.wrap_future(fut)

    @property
    def num_unfinished_requests(self) -> int:
        """Requests running or waiting in the engine now (a racy read from another thread: a hint only)."""
        sched = self.engine.scheduler
        return len(sched.running) + len(sched.waiting)

    @property
    def model(self):
        """The served model, for read-only use: a learner's training view shares its base weights."""
        return self.engine.model

    def weight_deltas(self, version: int | None = None) -> dict:
        """The LoRA deltas of a kept version (default: the serving one), to continue training from."""
        return self.engine.weights.deltas(version)

    @property
    def weight_versions(self) -> list[int]:
        return self.engine.weights.versions

    async def rollback_weights(self, to: int | None = None) -> int:
        """Serve a kept version (default: the one below the current) from the next engine step on."""
        fut = self.engine.rollback_weights(to)
        self._wake.set()
        return await asyncio.wrap_future(fut)

    @property
    def weight_split(self) -> tuple[int, float] | None:
        """(version, share) of new requests routed to a version other than the serving one, or None."""
        return self.engine.weights.split

    async def split_weights(self, version: int | None, share: float = 0.0) -> None:
        """Route ``share`` of new requests (sticky by their ``user``) to kept ``version``; None ends the split."""
        fut = self.engine.split_weights(version, share)
        self._wake.set()
        await asyncio.wrap_future(fut)

    @property
    def weight_names(self) -> dict[str, int]:
        """Named lineage -> the version requests naming it get (loaded adapters, tenants)."""
        return dict(self.engine.weights.names)

    async def name_weights(self, name: str, version: int | None, parent: int | None = None) -> int | None:
        """Requests naming ``name`` (``SamplingParams.adapter``) run on kept ``version`` from the next engine
        step on; None forgets the name. With ``parent``: ``StaleParent`` unless the name still routes to it."""
        fut = self.engine.name_weights(name, version, parent)
        self._wake.set()
        return await asyncio.wrap_future(fut)

    async def generate(self, prompt_token_ids: list[int], params: SamplingParams,
                       request_id: str) -> AsyncIterator[RequestOutput]:
        """Stream a request's outputs; leaving the iteration early (client gone) aborts it at once."""
        if self.errored is not None:
            raise EngineDeadError(str(self.errored))
        params = self.engine.validate_request(prompt_token_ids, params)
        q: asyncio.Queue = asyncio.Queue()
        self._streams[request_id] = q
        self.engine.call_at_safe_point(lambda: self.engine.add_request(request_id, prompt_token_ids, params))
        self._wake.set()
        finished = False
        try:
            while True:
                out = await q.get()
                if isinstance(out, BaseException):
                    raise out
                finished = out.finished
                yield out
                if finished:
                    return
        finally:
            self._streams.pop(request_id, None)
            if not finished:
                self.engine.abort_request(request_id)
                self._wake.set()
