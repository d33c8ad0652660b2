"""One OpenAI SDK script against every provider Sluice translates to.

Usage: python provider_sdk_check.py <gateway base url> <master key> <model group>...
Each model group is served by a different provider format (OpenAI, Azure, Anthropic, Gemini,
Ollama, Cohere) behind the same mock; the answers must look identical through the SDK:
content, tool calls, finish_reason and usage, streaming and not. Prints one JSON summary per
group so the caller can compare them. Exits non-zero on the first failed expectation.
"""

import json
import sys

import openai
from openai import OpenAI

base_url, key, groups = sys.argv[1], sys.argv[2], sys.argv[3:]
client = OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=20)
messages = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Say hello"},
]
tools = [{"type": "function", "function": {"name": "get_weather", "description": "Weather",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
tool_mock = {"mock": {"tool_call": {"name": "get_weather", "arguments": {"city": "Paris"}}}}

for group in groups:
    summary = {"group": group}
    # Non-streaming text.
    c = client.chat.completions.create(model=group, messages=messages, max_tokens=50)
    assert c.model == group, (group, c.model)
    assert c.choices[0].finish_reason == "stop", (group, c)
    summary["content"] = c.choices[0].message.content
    summary["usage"] = [c.usage.prompt_tokens, c.usage.completion_tokens, c.usage.total_tokens]

    # Streaming text with usage.
    parts, finish, usage = [], None, None
    for chunk in client.chat.completions.create(
        model=group, messages=messages, stream=True, stream_options={"include_usage": True}
    ):
        assert chunk.model == group, (group, chunk.model)
        if chunk.usage:
            usage = [chunk.usage.prompt_tokens, chunk.usage.completion_tokens, chunk.usage.total_tokens]
        if chunk.choices:
            parts.append(chunk.choices[0].delta.content or "")
            finish = chunk.choices[0].finish_reason or finish
    summary["stream_content"] = "".join(parts)
    summary["stream_finish"] = finish
    summary["stream_usage"] = usage

    # Tool call, non-streaming and streaming.
    c = client.chat.completions.create(model=group, messages=messages, tools=tools, extra_body=tool_mock)
    call = c.choices[0].message.tool_calls[0]
    summary["tool"] = [c.choices[0].finish_reason, call.function.name, json.loads(call.function.arguments)]
    assert call.id, (group, call)
    name, args, finish = None, "", None
    for chunk in client.chat.completions.create(
        model=group, messages=messages, tools=tools, stream=True, extra_body=tool_mock
    ):
        if chunk.choices:
            delta = chunk.choices[0].delta
            for tc in delta.tool_calls or []:
                name = tc.function.name or name
                args += tc.function.arguments or ""
            finish = chunk.choices[0].finish_reason or finish
    summary["stream_tool"] = [finish, name, json.loads(args)]

    # A rate-limited upstream is a RateLimitError for every provider.
    try:
        client.chat.completions.create(model=group, messages=messages, extra_body={"mock": {"status": 429}})
        raise AssertionError(f"{group}: expected RateLimitError")
    except openai.RateLimitError as e:
        assert e.status_code == 429
    summary["errors"] = "ok"
    print(json.dumps(summary, sort_keys=True))

print("checks passed")
