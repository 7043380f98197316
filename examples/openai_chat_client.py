"""Chat with a running server through the official openai client, streamed and not.

    aphrodite run --enable-continuous-learning      # in another shell
    python examples/openai_chat_client.py
"""

from openai import OpenAI

client = OpenAI(base_url="http://127.0.0.1:2242/v1", api_key="none")
model = client.models.list().data[0].id

reply = client.chat.completions.create(model=model, temperature=0, max_tokens=48,
                                       messages=[{"role": "user", "content": "What is the capital of Japan?"}])
print(f"{reply.choices[0].message.content!r}  (id {reply.id}, {reply.usage.total_tokens} tokens)")

stream = client.chat.completions.create(model=model, max_tokens=48, stream=True,
                                        messages=[{"role": "user", "content": "What sound does a cow make?"}])
for chunk in stream:
    if chunk.choices and chunk.choices[0].delta.content:
        print(chunk.choices[0].delta.content, end="", flush=True)
print()
