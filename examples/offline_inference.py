"""Generate without a server: the engine directly, with continuous batching over a list of prompts."""

from aphrodite.engine.config import ModelLoadConfig
from aphrodite.engine.llm_engine import LLMEngine
from aphrodite.engine.sampling_params import SamplingParams

engine = LLMEngine(ModelLoadConfig())  # the built-in model
tok = engine.tokenizer
questions = ["What is the capital of Japan?", "What sound does a cow make?", "What colour is the sky?"]
prompts = [tok.encode(tok.apply_chat_template([{"role": "user", "content": q}]), add_special_tokens=False)
           for q in questions]
for q, out in zip(questions, engine.generate(prompts, SamplingParams(temperature=0, max_tokens=32))):
    print(f"{q} -> {out.outputs[0].text!r}")
