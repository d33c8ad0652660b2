"""Providers' own SDKs pointed at Sluice's pass-through routes with a Sluice virtual key.

Usage: python pass_through_sdk_check.py <gateway base url> <virtual key> <anthropic model> <openai model>
The Anthropic SDK talks to <gateway>/anthropic (the key goes in x-api-key, as the SDK sends it),
the OpenAI SDK to <gateway>/openai/v1. Prints one JSON summary. Exits non-zero on the first
failed expectation.
"""

import json
import sys

import anthropic
import openai

base_url, key, claude, gpt = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
messages = [{"role": "user", "content": "Say hello"}]
summary = {}

client = anthropic.Anthropic(base_url=base_url + "/anthropic", api_key=key, max_retries=0, timeout=20)
msg = client.messages.create(model=claude, max_tokens=50, messages=messages)
assert msg.type == "message" and msg.role == "assistant", msg
summary["anthropic_text"] = msg.content[0].text
summary["anthropic_usage"] = [msg.usage.input_tokens, msg.usage.output_tokens]
with client.messages.stream(model=claude, max_tokens=50, messages=messages) as stream:
    text = "".join(stream.text_stream)
    final = stream.get_final_message()
summary["anthropic_stream_text"] = text
summary["anthropic_stream_usage"] = [final.usage.input_tokens, final.usage.output_tokens]
try:
    client.messages.create(model=claude, max_tokens=50, messages=messages, extra_body={"mock": {"status": 429}})
    raise AssertionError("expected RateLimitError")
except anthropic.RateLimitError as e:
    summary["anthropic_error"] = [e.status_code, e.body["error"]["type"]]

oa = openai.OpenAI(base_url=base_url + "/openai/v1", api_key=key, max_retries=0, timeout=20)
chat = oa.chat.completions.create(model=gpt, messages=messages)
summary["openai_text"] = chat.choices[0].message.content
summary["openai_usage"] = [chat.usage.prompt_tokens, chat.usage.completion_tokens]
chunks = list(oa.chat.completions.create(model=gpt, messages=messages, stream=True,
                                         stream_options={"include_usage": True}))
summary["openai_stream_text"] = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
summary["openai_stream_usage"] = [chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens]

print(json.dumps(summary))
