"""``aphrodite run --upstream URL``: a learning front for an existing OpenAI-compatible server (vLLM, or another
Aphrodite server).

The front forwards ``/v1/completions`` and ``/v1/chat/completions`` to the upstream (streamed responses are
relayed chunk by chunk), captures each finished exchange for learning as if it had served it (token ids from
the local copy of the base model's tokenizer), and takes feedback on the upstream's response ids. It learns on
its own copy of the base model (``--model``, the same weights the upstream serves) and pushes every version
that starts serving to the upstream with vLLM's ``POST /v1/load_lora_adapter`` (the adapter directory from
``--learning-export-dir``, which the upstream must be able to read); from then on requests are forwarded with
``model`` set to that adapter's name (``learned-v<N>``).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, AsyncIterator

import httpx
from fastapi import Request
from fastapi.responses import Response, StreamingResponse

from aphrodite.common.observers import FinishedRequest, RequestObserver
from aphrodite.endpoints.openai.errors import APIError
from aphrodite.endpoints.openai.serving_engine import api_key_hash

logger = logging.getLogger(__name__)
VERSION_HEADER = "x-aphrodite-weight-version"
_SAMPLING = ("temperature", "top_p", "top_k", "max_tokens", "max_completion_tokens", "n", "seed", "stop",
             "presence_penalty", "frequency_penalty", "ignore_eos")


class UpstreamFront:
    """Forwards inference to ``url``, tells ``observers`` about every exchange, and pushes learned versions."""

    def __init__(self, url: str, tokenizer: Any, observers: list[RequestObserver], api_key: str | None = None,
                 model: str = "", adapter_prefix: str = "learned") -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.AsyncClient(base_url=url.rstrip("/"), headers=headers,
                                        timeout=httpx.Timeout(600.0, connect=10.0))
        self.tokenizer = tokenizer
        self.observers = observers
        self.base_model = model
        """The model name to send while no learned version serves ('' keeps the client's)."""
        self.adapter_prefix = adapter_prefix
        self.adapter: str | None = None
        """The adapter pushed last: requests are forwarded with ``model`` set to it."""
        self.version = 0

    async def close(self) -> None:
        await self.client.aclose()

    # -- pushing versions ----------------------------------------------------------------------------------
    async def push(self, version: int, path: Path | None) -> None:
        """Load ``version`` (its exported adapter directory ``path``) on the upstream and forward to it."""
        if version == 0 or path is None:
            self.adapter, self.version = None, 0
            return
        name = f"{self.adapter_prefix}-v{version}"
        r = await self.client.post("/v1/load_lora_adapter", json={"lora_name": name, "lora_path": str(path),
                                                                 "serve": True})
        if r.status_code != 200 and "already" not in r.text:
            raise RuntimeError(f"the upstream refused adapter {name}: {r.status_code} {r.text[:300]}")
        self.adapter, self.version = name, version
        logger.info("upstream serves learned version %d as model %r", version, name)

    # -- forwarding ----------------------------------------------------------------------------------------
    async def forward(self, endpoint: str, raw: Request) -> Response:
        try:
            body = json.loads(await raw.body())
        except ValueError:
            raise APIError("The request body is not valid JSON.", 400) from None
        if not isinstance(body, dict):
            raise APIError("The request body must be a JSON object.", 400)
        sent = {**body, "model": self.adapter or self.base_model or body.get("model")}
        learn = body.get("store") is not False and raw.headers.get("x-aphrodite-no-learn", "").strip().lower() \
            not in ("1", "true", "yes")
        exchange = _Exchange(endpoint, body, api_key_hash(raw), self.version, learn)
        try:
            if body.get("stream"):
                upstream = await self.client.send(self.client.build_request("POST", endpoint, json=sent), stream=True)
            else:
                upstream = await self.client.post(endpoint, json=sent)
        except httpx.HTTPError as exc:
            raise APIError(f"The upstream server cannot be reached ({type(exc).__name__}).", 502,
                           code="upstream_unreachable") from None
        headers = {VERSION_HEADER: upstream.headers[VERSION_HEADER]} if VERSION_HEADER in upstream.headers else {}
        if not body.get("stream"):
            if upstream.status_code == 200:
                exchange.finish(upstream.json(), self)
            return Response(upstream.content, upstream.status_code, headers=headers,
                            media_type=upstream.headers.get("content-type", "application/json"))
        if upstream.status_code != 200:
            content = await upstream.aread()
            await upstream.aclose()
            return Response(content, upstream.status_code, media_type="application/json")
        return StreamingResponse(self._relay(upstream, exchange), media_type="text/event-stream", headers=headers)

    async def _relay(self, upstream: httpx.Response, exchange: _Exchange) -> AsyncIterator[str]:
        """Relay the upstream's server-sent events, gathering what each choice said."""
        try:
            async for line in upstream.aiter_lines():
                if line.startswith("data: ") and line != "data: [DONE]":
                    exchange.add_chunk(line[6:])
                yield line + "\n"
        finally:
            await upstream.aclose()
        exchange.finish(None, self)

    def notify(self, request: FinishedRequest) -> None:
        for observer in self.observers:
            try:
                observer.on_request_finished(request)
            except Exception:  # an observer must not break serving
                logger.exception("request observer failed")


class _Exchange:
    """One forwarded request and what came back, turned into a ``FinishedRequest``."""

    def __init__(self, endpoint: str, body: dict, key_hash: str | None, version: int, learn: bool) -> None:
        self.endpoint, self.body, self.key_hash, self.version, self.learn = endpoint, body, key_hash, version, learn
        self.start = time.monotonic()
        self.first: float | None = None
        self.id = ""
        self.model = ""
        self.texts: dict[int, list[str]] = {}
        self.finish_reasons: dict[int, str | None] = {}
        self.usage: dict[str, int] = {}

    def add_chunk(self, data: str) -> None:
        try:
            chunk = json.loads(data)
        except ValueError:
            return
        self.first = self.first or time.monotonic()
        self.id, self.model = chunk.get("id", self.id), chunk.get("model", self.model)
        self.usage = chunk.get("usage") or self.usage
        for choice in chunk.get("choices") or []:
            i = choice.get("index", 0)
            piece = choice.get("text") if "text" in choice else (choice.get("delta") or {}).get("content")
            self.texts.setdefault(i, []).append(piece or "")
            if choice.get("finish_reason"):
                self.finish_reasons[i] = choice["finish_reason"]

    def finish(self, response: dict | None, front: UpstreamFront) -> None:
        if response is not None:
            self.id, self.model, self.usage = response.get("id", ""), response.get("model", ""), \
                response.get("usage") or {}
            for choice in response.get("choices") or []:
                i = choice.get("index", 0)
                text = choice.get("text") if "text" in choice else (choice.get("message") or {}).get("content")
                self.texts[i] = [text or ""]
                self.finish_reasons[i] = choice.get("finish_reason")
        if not self.learn or not self.id or not self.texts:
            return
        try:
            request = self._finished(front.tokenizer)
        except Exception:  # a request the front cannot describe (e.g. a list of prompts) is not captured
            logger.debug("not capturing %s", self.id, exc_info=True)
            return
        front.notify(request)

    def _finished(self, tok: Any) -> FinishedRequest:
        body = self.body
        messages = None
        if self.endpoint.endswith("chat/completions"):
            messages = [{"role": m["role"], "content": m["content"]} for m in body["messages"]
                        if isinstance(m.get("content"), str)]
            prompt = tok.apply_chat_template(messages, add_generation_prompt=True)
        else:
            prompt = body["prompt"] if isinstance(body["prompt"], str) else body["prompt"][0]
        order = sorted(self.texts)
        texts = ["".join(self.texts[i]) for i in order]
        ids = [tok.encode(t, add_special_tokens=False) for t in texts]
        now = time.monotonic()
        return FinishedRequest(
            response_id=self.id, endpoint=self.endpoint, model=self.model, prompt=prompt, messages=messages,
            completion_texts=texts, completion_token_ids=ids, finish_reasons=[self.finish_reasons.get(i) for i in order],
            prompt_tokens=int(self.usage.get("prompt_tokens") or len(tok.encode(prompt, add_special_tokens=False))),
            completion_tokens=int(self.usage.get("completion_tokens") or sum(map(len, ids))),
            ttft_s=None if self.first is None else self.first - self.start, total_s=now - self.start,
            weight_version=self.version, weight_versions=[self.version],
            sampling_params={k: body[k] for k in _SAMPLING if k in body}, stream=bool(body.get("stream")),
            api_key_hash=self.key_hash)


async def push_safely(front: UpstreamFront, system: Any, version: int, path: Path | None) -> None:
    """``push`` as a version listener: a failure is logged and counted; the front keeps its last adapter."""
    try:
        await front.push(version, path)
    except Exception as exc:
        logger.warning("pushing version %d to the upstream failed: %s", version, exc)
        system.record_failure(f"pushing version {version} to the upstream failed")

