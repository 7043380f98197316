"""Score a text with the model: `echo` + `logprobs` + `max_tokens: 0` returns every token's log-probability.

The learning checks use this to measure what the model learned (a lower mean negative log-likelihood on a
fact means the model now finds it more likely).

    python examples/score_text.py "The capital of France is Paris."
"""

import sys

from openai import OpenAI

client = OpenAI(base_url="http://127.0.0.1:2242/v1", api_key="none")
model = client.models.list().data[0].id
text = sys.argv[1] if len(sys.argv) > 1 else "The capital of France is Paris."
r = client.completions.create(model=model, prompt=text, max_tokens=0, echo=True, logprobs=1)
lp = [x for x in r.choices[0].logprobs.token_logprobs if x is not None]
print(f"{len(lp)} scored tokens, mean negative log-likelihood {-sum(lp) / len(lp):.3f}")
