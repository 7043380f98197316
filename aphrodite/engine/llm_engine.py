"""The engine: one step = schedule -> execute -> process outputs -> safe point.

The safe point is the only place where work from outside the step happens: queued request additions,
aborts, registered between-step callbacks and one-shot calls (weight swaps, cache resets). Nothing there
can run in the middle of a forward pass, because the step itself runs them, after the pass.
Other threads hand work in through ``call_at_safe_point`` and ``abort_request``, which are thread-safe;
everything else belongs to the thread that calls ``step``.
"""

from __future__ import annotations

import logging
import os
import queue
import time
from collections import deque
from concurrent.futures import Future
from pathlib import Path
from typing import Callable, TypeVar

import torch
from prometheus_client import CollectorRegistry

from aphrodite.common import cores
from aphrodite.common.faults import crash_point
from aphrodite.engine.block_manager import BlockManager
from aphrodite.engine.config import CacheConfig, ModelLoadConfig
from aphrodite.engine.metrics import EngineMetrics
from aphrodite.engine.model_runner import ModelRunner, StepResult, kv_bytes_per_token
from aphrodite.engine.outputs import RequestOutput, append_token, make_output
from aphrodite.engine.sampling_params import SamplingParams
from aphrodite.engine.scheduler import Scheduler, SchedulerConfig, SchedulerOutput
from aphrodite.engine.sequence import Sequence
from aphrodite.engine.weights import LoRADelta, PreparedVersion, WeightVersions
from aphrodite.modeling.loader import load_model
from aphrodite.modeling.tokenizer import Tokenizer

logger = logging.getLogger(__name__)
T = TypeVar("T")


class RequestRejected(ValueError):
    """The request can never run on this engine (e.g. longer than the context); ``param`` names the cause."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


def builtin_model_dir() -> Path:
    """The checkpoint shipped inside the package, served when no model is named."""
    import aphrodite.modeling.builtin as builtin

    return Path(builtin.__file__).parent / "checkpoint"


class LLMEngine:
    """Continuous-batching generation over a paged KV cache."""

    def __init__(self, load: ModelLoadConfig, cache: CacheConfig | None = None,
                 sched: SchedulerConfig | None = None, registry: CollectorRegistry | None = None) -> None:
        cache = cache or CacheConfig()
        sched = sched or SchedulerConfig()
        self.model_dir = Path(load.model) if load.model else builtin_model_dir()
        self.model_name = load.served_model_name or (
            "aphrodite-builtin" if load.model is None else self.model_dir.resolve().name)
        torch.manual_seed(load.seed)
        self.num_threads = self._set_threads(load)
        self.tokenizer = Tokenizer(self.model_dir)
        self.model = load_model(self.model_dir, load.dtype, load.resolved_device())
        cfg = self.model.config
        self.max_model_len = load.max_model_len or cfg.max_position_embeddings
        if self.max_model_len > cfg.max_position_embeddings:
            raise ValueError(f"max_model_len {self.max_model_len} exceeds the model's "
                             f"max_position_embeddings {cfg.max_position_embeddings}")
        self.blocks = BlockManager(self._num_blocks(cache, sched), cache.block_size,
                                   enable_prefix_caching=cache.enable_prefix_caching)
        if not sched.enable_chunked_prefill:  # every prompt must fit one step
            sched.max_num_batched_tokens = max(sched.max_num_batched_tokens, self.max_model_len)
        self.scheduler = Scheduler(sched, self.blocks)
        self.runner = ModelRunner(self.model, self.blocks, load.hidden_state_dim or None, load.seed)
        self.eos_ids = set(cfg.eos_token_ids) | (
            {self.tokenizer.eos_token_id} if self.tokenizer.eos_token_id is not None else set())
        self.metrics = EngineMetrics(registry, self.model_name) if registry is not None else None
        self.weights = WeightVersions(self.model, max_rank=load.max_lora_rank,
                                      max_resident=load.max_resident_versions)
        self.scheduler.admit = self.weights.admit
        self.runner.bind_adapters = self.weights.bind
        self.swap_seconds: deque[float] = deque(maxlen=1_000)
        """Stall of each weight swap at the safe point (the last 1,000), for benchmarks."""
        self._seqs: dict[str, Sequence] = {}
        self._inbox: queue.SimpleQueue[tuple[Callable[[], object], Future]] = queue.SimpleQueue()
        self._step_callbacks: list[Callable[["LLMEngine"], None]] = []

    @staticmethod
    def _set_threads(load: ModelLoadConfig) -> int:
        """Intra-op threads for a CPU engine (see ``common/cores.py``, and ``threads.py`` for the wait policy); a
        CUDA engine keeps torch's setting."""
        if load.resolved_device().type != "cpu":
            return torch.get_num_threads()
        requested = load.num_threads or int(os.environ.get("OMP_NUM_THREADS") or 0) or None
        free = cores.free_cores() if requested is None else 0.0
        n = cores.choose_num_threads(requested, len(cores.allowed_cpus()), free)
        torch.set_num_threads(n)
        logger.info("engine threads: %d (asked: %s, free cores at start: %.1f, OMP_WAIT_POLICY=%s)", n, requested,
                    free, os.environ.get("OMP_WAIT_POLICY", "unset"))
        return n

    def _num_blocks(self, cache: CacheConfig, sched: SchedulerConfig) -> int:
        per_block = kv_bytes_per_token(self.model) * cache.block_size
        budget = int(cache.kv_cache_space_gb * 2**30) // per_block
        per_seq = -(-self.max_model_len // cache.block_size)
        num_blocks = min(budget, sched.max_num_seqs * per_seq + 2)
        if num_blocks < per_seq + 2:
            raise ValueError(f"kv_cache_space_gb={cache.kv_cache_space_gb} holds {budget} blocks, too few for one "
                             f"sequence of max_model_len={self.max_model_len}; raise it or lower max_model_len")
        return num_blocks

    # ---- requests -------------------------------------------------------------------------------------
    def validate_request(self, prompt_token_ids: list[int], params: SamplingParams) -> SamplingParams:
        """Check a request against this engine's limits; returns params with max_tokens resolved."""
        n = len(prompt_token_ids)
        if n == 0:
            raise RequestRejected("The prompt is empty.", "prompt")
        if any(t < 0 or t >= self.model.config.vocab_size for t in prompt_token_ids):
            raise RequestRejected("The prompt contains token ids outside the vocabulary.", "prompt")
        if n >= self.max_model_len and not (params.max_tokens == 0 and n == self.max_model_len):
            raise RequestRejected(f"This model's maximum context length is {self.max_model_len} tokens. However, "
                                  f"your prompt has {n} tokens. Please shorten it.", "prompt")
        if params.max_tokens is None:
            params.max_tokens = self.max_model_len - n
        elif n + params.max_tokens > self.max_model_len:
            raise RequestRejected(f"This model's maximum context length is {self.max_model_len} tokens. However, you "
                                  f"requested {n + params.max_tokens} tokens ({n} in the prompt, "
                                  f"{params.max_tokens} for the completion).", "max_tokens")
        return params

    def add_request(self, request_id: str, prompt_token_ids: list[int], params: SamplingParams) -> None:
        """Queue a request (call from the stepping thread, or through ``call_at_safe_point``)."""
        if request_id in self._seqs:
            raise RequestRejected(f"request id {request_id} is already running")
        params = self.validate_request(prompt_token_ids, params)
        seq = Sequence(request_id, list(prompt_token_ids), params,
                       self.tokenizer.decode_stream(params.skip_special_tokens))
        self._seqs[request_id] = seq
        self.scheduler.add(seq)

    def abort_request(self, request_id: str) -> None:
        """Thread-safe: the request's resources are freed at the next safe point."""
        self.call_at_safe_point(lambda: self._abort(request_id))

    def _abort(self, request_id: str) -> None:
        seq = self._seqs.pop(request_id, None)
        if seq is not None:
            self.scheduler.finish(seq)
            self.weights.release(seq)

    def has_unfinished_requests(self) -> bool:
        return self.scheduler.has_unfinished()

    def has_pending_work(self) -> bool:
        return self.scheduler.has_unfinished() or not self._inbox.empty()

    @property
    def device(self) -> str:
        """Where the model runs (``cpu``, ``cuda:0``): other per-token work (the quality predictor) runs there too."""
        return str(self.runner.device)

    # ---- weights: the narrow interface learning uses --------------------------------------------------
    @property
    def weight_version(self) -> int:
        """The version serving requests now (0 = base model)."""
        return self.weights.version

    def submit_weights(self, version: int, deltas: dict[str, LoRADelta], serve: bool = True) -> "Future[int]":
        """Thread-safe: keep ``version`` and (if ``serve``) serve it from the next step on. The deltas are
        checked and padded here, on the caller's thread: a delta that does not fit raises ``ValueError`` now,
        and the safe point only copies. The future holds the version serving afterwards."""
        return self.swap_in(version, self.weights.prepare(deltas), serve)

    def swap_in(self, version: int, prepared: PreparedVersion, serve: bool = True,
                parent: int | None = None) -> "Future[int]":
        """Thread-safe: keep an already prepared version and (if ``serve``) copy it in at the next safe point;
        with ``parent``, the future fails with ``StaleParent`` unless ``parent`` still serves then. The deltas
        are copied into a free resident slot here, on the caller's thread, so the safe point need not."""
        self.weights.stage(version, prepared)
        return self.call_at_safe_point(lambda: self._swap(self.weights.apply, version, prepared, serve, parent))

    def rollback_weights(self, to: int | None = None) -> "Future[int]":
        """Thread-safe: serve a kept version (default: the one below the current) from the next step on."""
        return self.call_at_safe_point(lambda: self._swap(self.weights.rollback, to))

    def split_weights(self, version: int | None, share: float = 0.0) -> "Future[None]":
        """Thread-safe: from the next step on, ``share`` of new requests (sticky by ``routing_key``) run on kept
        ``version`` instead of the serving one (a canary); None ends the split."""
        return self.call_at_safe_point(lambda: self.weights.set_split(version, share))

    def name_weights(self, name: str, version: int | None, parent: int | None = None) -> "Future[int | None]":
        """Thread-safe: from the next step on, requests naming ``name`` run on kept ``version`` (None forgets the
        name); with ``parent``, the future fails with ``StaleParent`` unless the name still routes to it."""
        return self.call_at_safe_point(lambda: self.weights.name(name, version, parent))

    def _swap(self, fn, *args) -> int:
        crash_point("engine.swap")
        t0 = time.perf_counter()
        version = fn(*args)
        elapsed = time.perf_counter() - t0
        self.swap_seconds.append(elapsed)
        if self.metrics is not None:
            self.metrics.set_weight_version(version, elapsed)
        return version

    # ---- the safe point -------------------------------------------------------------------------------
    def call_at_safe_point(self, fn: Callable[[], T]) -> "Future[T]":
        """Thread-safe: run ``fn`` between two steps, never during a forward pass; its result in the future."""
        fut: Future[T] = Future()
        self._inbox.put((fn, fut))
        return fut

    def add_step_callback(self, fn: Callable[["LLMEngine"], None]) -> None:
        """Run ``fn(engine)`` at every safe point (keep it short: it delays the next step)."""
        self._step_callbacks.append(fn)

    def _safe_point(self) -> None:
        while True:
            try:
                fn, fut = self._inbox.get_nowait()
            except queue.Empty:
                break
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(fn())
            except BaseException as e:  # noqa: BLE001 - handed to the caller through the future
                fut.set_exception(e)
        for cb in self._step_callbacks:
            try:
                cb(self)
            except Exception:
                logger.exception("step callback failed")

    # ---- the step -------------------------------------------------------------------------------------
    def step(self) -> list[RequestOutput]:
        preempted_before = self.scheduler.num_preemptions
        prefix_before = (self.blocks.prefix_queries, self.blocks.prefix_hits)
        sched = self.scheduler.schedule(self.weight_version)
        outputs: list[RequestOutput] = []
        prompt_tokens = 0
        if not sched.is_empty:
            result = self.runner.execute(sched.seqs, sched.is_prefill, sched.num_new_tokens)
            # the step ran before the safe point: the serving version computed it
            self.scheduler.update(sched, self.weight_version)
            if sched.is_prefill:
                prompt_tokens = sum(sched.seqs[i].num_tokens for i in result.sampled_rows)
            outputs = self._process_outputs(sched, result)
        self._safe_point()
        if self.metrics is not None:  # after the safe point, so aborts show in the gauges at once
            used = 1 - self.blocks.num_free_blocks / max(1, self.blocks.num_blocks - 1)
            self.metrics.observe_step(len(self.scheduler.running), len(self.scheduler.waiting), used,
                                      prompt_tokens, outputs, self.scheduler.num_preemptions - preempted_before)
            self.metrics.observe_prefix_cache(self.blocks.prefix_queries - prefix_before[0],
                                              self.blocks.prefix_hits - prefix_before[1])
        return outputs

    def _process_outputs(self, sched: SchedulerOutput, result: StepResult) -> list[RequestOutput]:
        outputs = []
        samples = result.samples
        for j, i in enumerate(result.sampled_rows):  # rows whose prefill chunk stopped short have nothing yet
            seq = sched.seqs[i]
            version = seq.weight_version if seq.weight_version is not None else self.weight_version
            if i in result.prompt_logprobs:
                seq.prompt_logprobs = result.prompt_logprobs[i]
            if seq.params.max_tokens == 0:
                seq.finish_reason = "length"  # scoring only: the prompt's log-probabilities are the answer
            else:
                seq.saw_version(version)  # pinned: the version it was admitted with computed it
                append_token(seq, samples.token_ids[j], samples.logprobs[j], samples.top_logprobs[j], self.eos_ids,
                             self.max_model_len)
                if i in result.hidden_states and seq.hidden_states is not None:
                    seq.hidden_states.append(result.hidden_states[i])
            outputs.append(make_output(seq, version))
            if seq.finish_reason is not None:
                self.scheduler.finish(seq)
                self.weights.release(seq)
                self._seqs.pop(seq.request_id, None)
        return outputs

    # ---- offline convenience ------------------------------------------------------------------------
    def generate(self, prompts: list[list[int]], params: SamplingParams | list[SamplingParams]) -> list[RequestOutput]:
        """Run prompts to completion (offline use, tests, benchmarks); results in prompt order."""
        plist = params if isinstance(params, list) else [params] * len(prompts)
        ids = [f"offline-{i}" for i in range(len(prompts))]
        for rid, prompt, p in zip(ids, prompts, plist):
            self.add_request(rid, prompt, SamplingParams(**vars(p)))
        final: dict[str, RequestOutput] = {}
        while self.has_unfinished_requests():
            for out in self.step():
                if out.finished:
                    final[out.request_id] = out
        return [final[rid] for rid in ids]
