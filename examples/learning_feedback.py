"""Send feedback on a response by its id, then read the learning status.

Needs a server started with --enable-continuous-learning.

    python examples/learning_feedback.py
"""

import httpx
from openai import OpenAI

base = "http://127.0.0.1:2242"
client = OpenAI(base_url=base + "/v1", api_key="none")
reply = client.chat.completions.create(model=client.models.list().data[0].id, max_tokens=32,
                                       messages=[{"role": "user", "content": "What colour is grass?"}])
print("answer:", reply.choices[0].message.content)
fb = httpx.post(base + "/v1/learning/feedback",
                json={"response_id": reply.id, "user_satisfaction": 1.0, "comment": "correct"})
print("feedback:", fb.status_code, fb.json())
print("status:", httpx.get(base + "/v1/learning/status").json())
