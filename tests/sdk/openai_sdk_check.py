"""Drives Sluice with the official OpenAI Python SDK, the way a LiteLLM user does.

Usage: python openai_sdk_check.py <gateway base url> <master key>
Exits non-zero (with a traceback) on the first failed expectation.
"""

import sys

import openai
from openai import OpenAI

base_url, key = sys.argv[1], sys.argv[2]
client = OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=20)

# Chat completion, with the routing headers visible through the raw response.
raw = client.chat.completions.with_raw_response.create(
    model="gpt-4o",
    messages=[{"role": "user", "content": "Say hello"}],
)
completion = raw.parse()
assert completion.model == "gpt-4o", completion.model
assert completion.choices[0].message.content == "Hello word1 word2 word3 word4", completion
assert completion.choices[0].finish_reason == "stop"
assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens
assert raw.headers["x-litellm-model-group"] == "gpt-4o"
assert len(raw.headers["x-litellm-model-id"]) == 64
assert raw.headers["x-request-id"]

# Streaming, assembled by the SDK.
stream = client.chat.completions.create(
    model="gpt-4o",
    messages=[{"role": "user", "content": "Stream please"}],
    stream=True,
)
parts, finish = [], None
for chunk in stream:
    assert chunk.model == "gpt-4o", chunk.model
    if chunk.choices:
        parts.append(chunk.choices[0].delta.content or "")
        finish = chunk.choices[0].finish_reason or finish
assert "".join(parts) == "Hello word1 word2 word3 word4", parts
assert finish == "stop"

# Streaming with usage, as the client asked for it.
stream = client.chat.completions.create(
    model="gpt-4o",
    messages=[{"role": "user", "content": "count me"}],
    stream=True,
    stream_options={"include_usage": True},
)
usage = [c.usage for c in stream if c.usage]
assert len(usage) == 1 and usage[0].completion_tokens == 5, usage

# Legacy completions and embeddings.
text = client.completions.create(model="instruct", prompt="Once upon a time")
assert text.choices[0].text and text.model == "instruct"
embeddings = client.embeddings.create(model="text-embedding", input=["first", "second"])
assert len(embeddings.data) == 2 and len(embeddings.data[0].embedding) == 8
assert embeddings.model == "text-embedding"

# The model list.
ids = [m.id for m in client.models.list()]
assert ids[:2] == ["gpt-4o", "text-embedding"], ids
# One model (`models.retrieve`), and an unknown one as the SDK's NotFoundError.
model = client.models.retrieve("gpt-4o")
assert model.id == "gpt-4o" and model.object == "model" and model.owned_by, model
try:
    client.models.retrieve("no-such-model")
    raise AssertionError("an unknown model was found")
except openai.NotFoundError as e:
    assert e.status_code == 404 and "no-such-model" in str(e)

# Errors surface as the SDK's exception classes.
try:
    OpenAI(base_url=base_url, api_key="sk-wrong", max_retries=0).models.list()
    raise AssertionError("a wrong key was accepted")
except openai.AuthenticationError as e:
    assert e.status_code == 401
try:
    client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    raise AssertionError("an unknown model was accepted")
except openai.BadRequestError as e:
    assert "Invalid model name" in str(e)
try:
    client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "x"}], extra_body={"mock": {"status": 429}}
    )
    raise AssertionError("the upstream 429 was lost")
except openai.RateLimitError as e:
    assert e.status_code == 429

print("openai SDK", openai.__version__, "checks passed")
