"""``POST /v1/completions``: text in, text out, streamed or not; ``echo`` + ``logprobs`` scores a text."""

from __future__ import annotations

import json
import time
from typing import AsyncIterator

from fastapi import Request
from fastapi.responses import JSONResponse, StreamingResponse

from aphrodite.endpoints.openai.errors import APIError
from aphrodite.endpoints.openai.protocol import (CompletionChoice, CompletionLogProbs, CompletionRequest,
                                                 CompletionResponse)
from aphrodite.endpoints.openai.serving_engine import (OpenAIServing, RequestTrace, SubRequest, api_error_from,
                                                       usage_of)
from aphrodite.engine.outputs import RequestOutput
from aphrodite.engine.sequence import TopLogprobs


class OpenAIServingCompletion(OpenAIServing):
    """Handler of the completions endpoint."""

    endpoint = "/v1/completions"

    async def create(self, req: CompletionRequest, raw: Request):
        trace = self.trace("cmpl", req, raw)
        try:
            raw_prompts = req.prompts()
            self.limits.check_sampling(req.n, len(raw_prompts), req.stop, req.stop_token_ids)
            self.limits.check_text(max(len(p) if isinstance(p, str) else 0 for p in raw_prompts),
                                   self.engine.max_model_len, "prompt")
            self._check_token_ids(raw_prompts)
            params = self.sampling_params(req, trace)
            prompts, prompt_text = await self.off_loop(self._tokenize, raw_prompts)
            subs = self.build_subrequests(prompts, params)
        except Exception as e:
            raise api_error_from(e) from e
        if req.stream:
            outputs = await self.open_stream(subs, trace, prompt_text, None, params)
            return StreamingResponse(self._stream(req, subs, outputs, trace, prompt_text, params),
                                     media_type="text/event-stream", headers=self.version_header(subs))
        await self.run_to_completion(raw, subs, trace, prompt_text, None, params)
        choices = [self._choice(req, s, s.final) for s in subs]
        body = CompletionResponse(id=trace.response_id, model=trace.model, choices=choices,
                                  usage=usage_of(subs))
        return JSONResponse(body.model_dump(), headers=self.version_header(subs))

    def _check_token_ids(self, raw_prompts: list[str | list[int]]) -> None:
        """A prompt given as token ids may only hold ids of the tokenizer's vocabulary (a 400, never a 500)."""
        vocab = self.engine.tokenizer.vocab_size
        for p in raw_prompts:
            if not isinstance(p, str) and any(not 0 <= t < vocab for t in p):
                bad = next(t for t in p if not 0 <= t < vocab)
                raise APIError(f"prompt token id {bad} is outside the vocabulary [0, {vocab})", 400,
                               param="prompt", code="invalid_token_id")

    def _tokenize(self, raw_prompts: list[str | list[int]]) -> tuple[list[list[int]], str]:
        """Token ids of each prompt and the prompts as one text (runs on the tokenizer thread)."""
        tok = self.engine.tokenizer
        prompts = [tok.encode(p) if isinstance(p, str) else p for p in raw_prompts]
        return prompts, "\n".join(p if isinstance(p, str) else tok.decode(p) for p in raw_prompts)

    def _choice(self, req: CompletionRequest, sub: SubRequest, out: RequestOutput) -> CompletionChoice:
        comp = out.outputs[0]
        text, logprobs = comp.text, None
        if req.echo:
            text = self.engine.tokenizer.decode(sub.prompt_ids) + text
        if req.logprobs is not None:
            logprobs = self._logprobs(sub, out, req.echo)
        return CompletionChoice(index=sub.choice, text=text, logprobs=logprobs, finish_reason=comp.finish_reason,
                                stop_reason=comp.stop_reason)

    def _logprobs(self, sub: SubRequest, out: RequestOutput, echo: bool, start: int = 0,
                  offset: int = 0) -> CompletionLogProbs:
        """Per-token log-probabilities: prompt tokens first when ``echo``, then completion tokens from ``start``."""
        tok = self.engine.tokenizer
        entries: list[tuple[int, TopLogprobs | None]] = []
        if echo and out.prompt_logprobs is not None:
            entries += list(zip(sub.prompt_ids, out.prompt_logprobs))
        comp = out.outputs[0]
        entries += list(zip(comp.token_ids, comp.logprobs or []))[start:]
        lp = CompletionLogProbs()
        for token_id, top in entries:
            piece = tok.decode([token_id], skip_special_tokens=False)
            lp.tokens.append(piece)
            lp.token_logprobs.append(None if top is None else top[token_id])
            lp.top_logprobs.append(None if top is None else
                                   {tok.decode([t], skip_special_tokens=False): v for t, v in top.items()})
            lp.text_offset.append(offset)
            offset += len(piece)
        return lp

    async def _stream(self, req: CompletionRequest, subs: list[SubRequest], outputs: AsyncIterator,
                      trace: RequestTrace,
                      prompt_text: str, params) -> AsyncIterator[str]:
        created = int(time.time())
        sent_text = {s.choice: 0 for s in subs}
        sent_tokens = {s.choice: 0 for s in subs}
        offsets = {s.choice: 0 for s in subs}
        started: set[int] = set()
        status, error = 200, None
        try:
            async for sub, out in outputs:
                comp = out.outputs[0]
                first = sub.choice not in started
                delta = comp.text[sent_text[sub.choice]:]
                if req.echo and first:
                    delta = self.engine.tokenizer.decode(sub.prompt_ids) + delta
                if not delta and not out.finished and (req.logprobs is None or len(comp.token_ids) == sent_tokens[sub.choice]):
                    continue
                logprobs = None
                if req.logprobs is not None:
                    logprobs = self._logprobs(sub, out, req.echo and first, sent_tokens[sub.choice],
                                              offsets[sub.choice])
                    if logprobs.text_offset:
                        offsets[sub.choice] = logprobs.text_offset[-1] + len(logprobs.tokens[-1])
                started.add(sub.choice)
                sent_text[sub.choice] = len(comp.text)
                sent_tokens[sub.choice] = len(comp.token_ids)
                choice = CompletionChoice(index=sub.choice, text=delta, logprobs=logprobs,
                                          finish_reason=comp.finish_reason, stop_reason=comp.stop_reason)
                chunk = CompletionResponse(id=trace.response_id, created=created, model=trace.model,
                                           choices=[choice])
                yield _sse(chunk.model_dump(exclude={"usage"}))
            if req.stream_options and req.stream_options.include_usage:
                chunk = CompletionResponse(id=trace.response_id, created=created, model=trace.model,
                                           choices=[], usage=usage_of(subs))
                yield _sse(chunk.model_dump())
        except Exception as e:  # the status line is gone: report in-band, as OpenAI does
            err = api_error_from(e)
            status, error = err.status, err.message
            yield _sse(err.body())
        finally:
            if status == 200 and any(s.final is None for s in subs):
                status, error = 499, "client disconnected"
            self.notify(trace, subs, prompt_text, None, params, status, error)
        yield "data: [DONE]\n\n"


def _sse(obj: dict) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"
