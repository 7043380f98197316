"""``POST /v1/chat/completions``: messages rendered with the model's chat template, streamed or not."""

from __future__ import annotations

import json
import time
from typing import AsyncIterator

from fastapi import Request
from fastapi.responses import JSONResponse, StreamingResponse

from aphrodite.endpoints.openai.protocol import (ChatChoice, ChatCompletionChunk, ChatCompletionRequest,
                                                 ChatCompletionResponse, ChatLogprobs, ChatResponseMessage,
                                                 ChatStreamChoice, ChatTokenLogprob, DeltaMessage, TopLogprob,
                                                 UsageInfo)
from aphrodite.endpoints.openai.serving_engine import (OpenAIServing, RequestTrace, SubRequest, api_error_from,
                                                       usage_of)
from aphrodite.engine.outputs import CompletionOutput


class OpenAIServingChat(OpenAIServing):
    """Handler of the chat completions endpoint."""

    endpoint = "/v1/chat/completions"

    async def create(self, req: ChatCompletionRequest, raw: Request):
        trace = self.trace("chatcmpl", req, raw)
        try:
            self.limits.check_sampling(req.n, 1, req.stop, req.stop_token_ids)
            messages = [{"role": m.role, "content": m.text(), **({"name": m.name} if m.name else {})}
                        for m in req.messages]
            self.limits.check_text(sum(len(m["content"]) for m in messages), self.engine.max_model_len, "messages")
            prompt, prompt_ids = await self.off_loop(self._render, messages, req.add_generation_prompt)
            params = self.sampling_params(req, trace)
            subs = self.build_subrequests([prompt_ids], params)
        except Exception as e:
            raise api_error_from(e) from e
        if req.stream:
            outputs = await self.open_stream(subs, trace, prompt, messages, params)
            return StreamingResponse(self._stream(req, subs, outputs, trace, prompt, messages, params),
                                     media_type="text/event-stream", headers=self.version_header(subs))
        await self.run_to_completion(raw, subs, trace, prompt, messages, params)
        choices = []
        for s in subs:
            comp = s.final.outputs[0]
            choices.append(ChatChoice(index=s.choice, message=ChatResponseMessage(content=comp.text),
                                      logprobs=self._logprobs(comp, 0, req.top_logprobs or 0) if req.logprobs else None,
                                      finish_reason=comp.finish_reason, stop_reason=comp.stop_reason))
        body = ChatCompletionResponse(id=trace.response_id, model=trace.model, choices=choices,
                                      usage=usage_of(subs))
        return JSONResponse(body.model_dump(), headers=self.version_header(subs))

    def _render(self, messages: list[dict], add_generation_prompt: bool) -> tuple[str, list[int]]:
        """The chat prompt and its token ids (runs on the tokenizer thread)."""
        tok = self.engine.tokenizer
        prompt = tok.apply_chat_template(messages, add_generation_prompt=add_generation_prompt)
        return prompt, tok.encode(prompt, add_special_tokens=False)  # the template wrote any BOS token

    def _logprobs(self, comp: CompletionOutput, start: int, top_n: int) -> ChatLogprobs:
        tok = self.engine.tokenizer

        def entry(token_id: int, logprob: float) -> dict:
            text = tok.decode([token_id], skip_special_tokens=False)
            return {"token": text, "logprob": max(logprob, -9999.0), "bytes": list(text.encode())}

        content = []
        for token_id, top in list(zip(comp.token_ids, comp.logprobs or []))[start:]:
            # ``top`` holds the sampled token plus the top-n; the n best of it are the true top-n
            best = sorted(top.items(), key=lambda kv: -kv[1])[:top_n]
            content.append(ChatTokenLogprob(**entry(token_id, top[token_id]),
                                            top_logprobs=[TopLogprob(**entry(t, v)) for t, v in best]))
        return ChatLogprobs(content=content)

    async def _stream(self, req: ChatCompletionRequest, subs: list[SubRequest], outputs: AsyncIterator,
                      trace: RequestTrace,
                      prompt: str, messages: list[dict], params) -> AsyncIterator[str]:
        created = int(time.time())
        model = trace.model

        def chunk(choices: list[ChatStreamChoice], usage: UsageInfo | None = None) -> str:
            body = ChatCompletionChunk(id=trace.response_id, created=created, model=model, choices=choices,
                                       usage=usage)
            return f"data: {json.dumps(body.model_dump(exclude_none=usage is None), ensure_ascii=False)}\n\n"

        sent_text = {s.choice: 0 for s in subs}
        sent_tokens = {s.choice: 0 for s in subs}
        status, error = 200, None
        try:
            # the role comes first, in its own chunk per choice, as OpenAI sends it
            yield chunk([ChatStreamChoice(index=s.choice, delta=DeltaMessage(role="assistant", content=""))
                         for s in subs])
            async for sub, out in outputs:
                comp = out.outputs[0]
                delta = comp.text[sent_text[sub.choice]:]
                if not delta and not out.finished and (not req.logprobs or len(comp.token_ids) == sent_tokens[sub.choice]):
                    continue
                logprobs = (self._logprobs(comp, sent_tokens[sub.choice], req.top_logprobs or 0)
                            if req.logprobs else None)
                sent_text[sub.choice] = len(comp.text)
                sent_tokens[sub.choice] = len(comp.token_ids)
                yield chunk([ChatStreamChoice(index=sub.choice, delta=DeltaMessage(content=delta), logprobs=logprobs,
                                              finish_reason=comp.finish_reason, stop_reason=comp.stop_reason)])
            if req.stream_options and req.stream_options.include_usage:
                yield chunk([], usage_of(subs))
        except Exception as e:
            err = api_error_from(e)
            status, error = err.status, err.message
            yield f"data: {json.dumps(err.body())}\n\n"
        finally:
            if status == 200 and any(s.final is None for s in subs):
                status, error = 499, "client disconnected"
            self.notify(trace, subs, prompt, messages, params, status, error)
        yield "data: [DONE]\n\n"
