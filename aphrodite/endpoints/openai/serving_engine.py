"""What the completion and chat handlers share: model check, validation, fan-out of n and batched prompts,
merging of streams, client-disconnect handling, and telling observers about finished requests."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Awaitable, TypeVar

from fastapi import Request

from aphrodite.common.observers import FinishedRequest, RequestObserver
from aphrodite.endpoints.limits import InputLimits
from aphrodite.endpoints.openai.errors import APIError, quote
from aphrodite.endpoints.openai.protocol import SamplingFields, UsageInfo, random_id
from aphrodite.engine.async_engine import AsyncEngine, EngineDeadError
from aphrodite.engine.llm_engine import RequestRejected
from aphrodite.engine.outputs import RequestOutput
from aphrodite.engine.sampling_params import SamplingParams, SamplingParamsError

logger = logging.getLogger(__name__)
T = TypeVar("T")
WEIGHT_VERSION_HEADER = "x-aphrodite-weight-version"
"""Response header: the weight version that produced the response's first token."""


def api_error_from(exc: Exception) -> APIError:
    """Map engine-side exceptions to the OpenAI error the client should see."""
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, SamplingParamsError):
        return APIError(str(exc), 400, param=exc.param)
    if isinstance(exc, RequestRejected):
        return APIError(str(exc), 400, param=exc.param, code="context_length_exceeded"
                        if "context length" in str(exc) else None)
    if isinstance(exc, EngineDeadError):
        return APIError("The engine has stopped; the server cannot serve requests.", 503)
    if isinstance(exc, ValueError):
        return APIError(str(exc), 400)
    logger.exception("unexpected error while serving", exc_info=exc)
    return APIError("Internal server error.", 500, type="server_error")


@dataclass
class SubRequest:
    """One engine request behind a response choice (prompt i, sample j)."""

    choice: int
    prompt_index: int
    prompt_ids: list[int]
    params: SamplingParams
    final: RequestOutput | None = None
    first_output: RequestOutput | None = None


@dataclass
class RequestTrace:
    """Timing and identity of one API request, for observers."""

    response_id: str
    endpoint: str
    stream: bool
    api_key_hash: str | None
    start: float = field(default_factory=time.monotonic)
    learn: bool = True
    """False when the client opted out (``"store": false`` or ``x-aphrodite-no-learn: 1``): observers are not
    told about this request."""
    model: str = ""
    """The model name the request is served as (the response's ``model``)."""
    adapter: str | None = None
    """The engine's named lineage the request runs on (``SamplingParams.adapter``); None: the base model's."""
    tenant: str | None = None
    """The tenant of a ``<base>:<tenant>`` model."""


class OpenAIServing:
    """Base of the completion and chat handlers."""

    endpoint = ""

    def __init__(self, engine: AsyncEngine, observers: list[RequestObserver],
                 limits: InputLimits | None = None) -> None:
        self.engine = engine
        self.observers = observers
        self.limits = limits or InputLimits()
        # one thread: tokenizing (and chat templating) never blocks the event loop, and one tokenizer is
        # never used by two requests at once
        self._tokenizer_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tokenize")
        self.adapters: Any = None
        """LoRA adapters loaded at run time (``serving_lora.OpenAIServingLoRA``), whose names are models too."""
        self.tenants: Any = None
        """Per-tenant adapters (``continuous_learning.tenants.Tenants``) when enabled: ``<base>:<tenant>``."""

    def check_model(self, model: str | None) -> tuple[str | None, str | None]:
        """(the engine's named lineage to run on, the tenant) for the requested model: (None, None) for the
        base model; a 404 for a model this server does not serve, a 400 for a malformed tenant name."""
        if model is None or model == self.engine.model_name:
            return None, None
        if self.adapters is not None and self.adapters.check(model):
            return model, None
        base, sep, tenant = model.partition(":")
        if sep and base == self.engine.model_name and self.tenants is not None:
            try:
                return self.tenants.lineage(tenant), tenant
            except ValueError as exc:  # a name no tenant may have
                raise APIError(f"The model `{quote(model)}` names an invalid tenant: {quote(exc, 200)}.", 400,
                               param="model", code="invalid_tenant") from None
            except LookupError:
                raise APIError(f"The model `{quote(model)}` does not exist: no tenant `{quote(tenant)}` (an admin "
                               "creates tenants with POST /v1/learning/tenants; GET /v1/models lists them).", 404,
                               param="model", code="model_not_found") from None
        raise APIError(f"The model `{quote(model)}` does not exist.", 404, param="model",
                       code="model_not_found")

    def trace(self, prefix: str, req: SamplingFields, raw: Request) -> RequestTrace:
        """The request's identity for observers: the caller's key identity, whether it may be learned from, and
        the model it is served as (a 404 for an unknown model)."""
        adapter, tenant = self.check_model(req.model)
        opted_out = req.store is False or raw.headers.get("x-aphrodite-no-learn", "").strip().lower() in (
            "1", "true", "yes")
        return RequestTrace(random_id(prefix), self.endpoint, req.stream, api_key_hash(raw), learn=not opted_out,
                            model=req.model if adapter is not None else self.engine.model_name, adapter=adapter,
                            tenant=tenant)

    @staticmethod
    def sampling_params(req: SamplingFields, trace: RequestTrace) -> SamplingParams:
        """The request's sampling parameters, run on the lineage its model names."""
        params = req.to_sampling_params()
        params.adapter = trace.adapter
        return params

    async def off_loop(self, fn: Callable[..., T], *args: Any) -> T:
        """Run tokenizer work on the tokenizer thread."""
        return await asyncio.get_running_loop().run_in_executor(self._tokenizer_thread,
                                                                functools.partial(fn, *args))

    def build_subrequests(self, prompts: list[list[int]], params: SamplingParams) -> list[SubRequest]:
        """Validate each prompt and fan out n samples each; seeded requests get seed + j for sample j."""
        subs = []
        hidden = any(getattr(o, "wants_hidden_states", False) for o in self.observers)
        for i, ids in enumerate(prompts):
            for j in range(params.n):
                p = dataclasses.replace(params, n=1, seed=None if params.seed is None else params.seed + j,
                                        stop=list(params.stop), stop_token_ids=list(params.stop_token_ids),
                                        return_hidden_states=hidden)
                self.engine.validate_request(ids, p)
                subs.append(SubRequest(len(subs), i, ids, p))
        return subs

    async def stream_all(self, subs: list[SubRequest], request_id: str) -> AsyncIterator[tuple[SubRequest, RequestOutput]]:
        """Run every sub-request and yield (sub, output) as outputs arrive; closing aborts the rest."""
        queue: asyncio.Queue = asyncio.Queue()

        async def pump(sub: SubRequest) -> None:
            try:
                async for out in self.engine.generate(sub.prompt_ids, sub.params, f"{request_id}-{sub.choice}"):
                    queue.put_nowait((sub, out))
            except BaseException as e:  # noqa: BLE001 - forwarded to the consumer
                queue.put_nowait((sub, e))

        tasks = [asyncio.create_task(pump(s)) for s in subs]
        remaining = len(subs)
        try:
            while remaining:
                sub, out = await queue.get()
                if isinstance(out, BaseException):
                    raise out
                if sub.first_output is None:
                    sub.first_output = out
                if out.finished:
                    sub.final = out
                    remaining -= 1
                yield sub, out
        finally:
            for t in tasks:
                t.cancel()

    async def open_stream(self, subs: list[SubRequest], trace: RequestTrace, prompt_text: str | None,
                          messages: list[dict] | None,
                          params: SamplingParams) -> AsyncIterator[tuple[SubRequest, RequestOutput]]:
        """Start a streamed request and wait for its first output, so the response headers can name the
        version that produced the first token; an error before then is the client's ``APIError`` (a real
        status line). Returns the stream, the first output included."""
        outputs = self.stream_all(subs, trace.response_id)
        try:
            first = await outputs.__anext__()
        except Exception as e:
            await outputs.aclose()
            err = api_error_from(e)
            self.notify(trace, subs, prompt_text, messages, params, err.status, err.message)
            raise err from e

        async def replay() -> AsyncIterator[tuple[SubRequest, RequestOutput]]:
            try:
                yield first
                async for item in outputs:
                    yield item
            finally:
                await outputs.aclose()

        return replay()

    def version_header(self, subs: list[SubRequest]) -> dict[str, str]:
        """``x-aphrodite-weight-version``: the version of the earliest first token among the choices."""
        firsts = [s.first_output for s in subs if s.first_output is not None]
        firsts.sort(key=lambda o: o.metrics.first_token_time or float("inf"))
        version = firsts[0].weight_version if firsts else self.engine.weight_version
        return {WEIGHT_VERSION_HEADER: str(version)}

    async def collect(self, subs: list[SubRequest], request_id: str) -> None:
        async for _ in self.stream_all(subs, request_id):
            pass

    async def run_to_completion(self, raw: Request, subs: list[SubRequest], trace: RequestTrace,
                                prompt_text: str | None, messages: list[dict] | None,
                                params: SamplingParams) -> None:
        """Non-streaming: run every sub-request to its end (aborting if the client leaves), then tell observers,
        errors included; raises the client's ``APIError``."""
        try:
            await until_disconnect(raw, self.collect(subs, trace.response_id))
        except Exception as e:
            err = api_error_from(e)
            self.notify(trace, subs, prompt_text, messages, params, err.status, err.message)
            raise err from e
        self.notify(trace, subs, prompt_text, messages, params)

    def notify(self, trace: RequestTrace, subs: list[SubRequest], prompt_text: str | None,
               messages: list[dict] | None, params: SamplingParams, status: int = 200,
               error: str | None = None) -> None:
        """Tell observers a request finished (unless the client opted out); an observer's failure never reaches
        the client."""
        if not self.observers or not trace.learn:
            return
        firsts = [s.first_output for s in subs if s.first_output and s.first_output.metrics.first_token_time]
        ttft = min((o.metrics.first_token_time - o.metrics.arrival_time for o in firsts), default=None)
        finals = [s.final for s in subs]
        seen = [o for s in subs for o in (s.final or s.first_output,) if o is not None]
        versions = sorted({v for o in seen for v in o.weight_versions}) or [self.engine.weight_version]
        comps = [f.outputs[0] if f else None for f in finals]
        record = FinishedRequest(
            response_id=trace.response_id, endpoint=self.endpoint, model=trace.model or self.engine.model_name,
            prompt=prompt_text, messages=messages,
            completion_texts=[c.text if c else "" for c in comps],
            completion_token_ids=[list(c.token_ids) if c else [] for c in comps],
            finish_reasons=[c.finish_reason if c else None for c in comps],
            prompt_tokens=prompt_token_count(subs),
            completion_tokens=sum(len(c.token_ids) for c in comps if c),
            ttft_s=ttft, total_s=time.monotonic() - trace.start, weight_version=int(self.version_header(subs)[WEIGHT_VERSION_HEADER]),
            weight_versions=versions,
            sampling_params=_params_dict(params), stream=trace.stream, status_code=status, error=error,
            api_key_hash=trace.api_key_hash, tenant=trace.tenant,
            mean_logprobs=[c.cumulative_logprob / len(c.token_ids) if c and c.token_ids else None for c in comps],
            hidden_states=[c.hidden_states for c in comps] if any(c and c.hidden_states is not None
                                                                   for c in comps) else None)
        for obs in self.observers:
            try:
                obs.on_request_finished(record)
            except Exception:
                logger.exception("request observer failed")


def prompt_token_count(subs: list[SubRequest]) -> int:
    """Prompt tokens counted once per prompt, however many samples it had (as OpenAI counts them)."""
    seen: dict[int, int] = {s.prompt_index: len(s.prompt_ids) for s in subs}
    return sum(seen.values())


def usage_of(subs: list[SubRequest]) -> UsageInfo:
    """Usage of finished sub-requests: prompts counted once each, every choice's tokens."""
    prompt = prompt_token_count(subs)
    completion = sum(len(s.final.outputs[0].token_ids) for s in subs if s.final is not None)
    return UsageInfo(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)


def _params_dict(params: SamplingParams) -> dict:
    d = dataclasses.asdict(params)
    d.pop("routing_key", None)  # the client's ``user``: not a sampling setting
    d.pop("adapter", None)  # the model it ran as is recorded beside it
    return {k: v for k, v in d.items() if v not in (None, [], False)}


def api_key_hash(request: Request) -> str | None:
    """The caller's key identity (``Principal.identity``, set by the auth middleware); None without a key."""
    principal = getattr(request.state, "principal", None)
    return principal.identity if principal is not None else None


async def until_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Await ``work``, cancelling it (and so aborting its engine requests) if the client goes away."""
    task = asyncio.ensure_future(work)

    async def watch() -> None:
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                return

    watcher = asyncio.ensure_future(watch())
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            return task.result()
        task.cancel()
        raise APIError("client disconnected", 499)
    finally:
        watcher.cancel()
