"""The official Anthropic Python SDK against Sluice's /v1/messages, for every model group.

Usage: python anthropic_sdk_check.py <gateway base url> <master key> <model group>...
Each group is served by a different provider format behind the same mock; through /v1/messages
all of them must answer in Anthropic's format, identically: text, stream, tool use, usage,
errors. Prints one JSON summary per group. Exits non-zero on the first failed expectation.
"""

import json
import sys

import anthropic

base_url, key, groups = sys.argv[1], sys.argv[2], sys.argv[3:]
client = anthropic.Anthropic(base_url=base_url, api_key=key, max_retries=0, timeout=20)
messages = [{"role": "user", "content": "Say hello"}]
tools = [{"name": "get_weather", "description": "Weather",
          "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]
tool_mock = {"mock": {"tool_call": {"name": "get_weather", "arguments": {"city": "Paris"}}}}

for group in groups:
    summary = {"group": group}
    msg = client.messages.create(model=group, max_tokens=50, system="You are terse.", messages=messages)
    assert msg.type == "message" and msg.role == "assistant", (group, msg)
    assert msg.model == group, (group, msg.model)
    summary["text"] = msg.content[0].text
    summary["stop"] = msg.stop_reason
    summary["output_tokens"] = msg.usage.output_tokens

    with client.messages.stream(model=group, max_tokens=50, system="You are terse.", messages=messages) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    summary["stream_text"] = text
    summary["stream_stop"] = final.stop_reason
    summary["stream_output_tokens"] = final.usage.output_tokens

    msg = client.messages.create(model=group, max_tokens=50, messages=messages, tools=tools, extra_body=tool_mock)
    uses = [b for b in msg.content if b.type == "tool_use"]
    assert uses and uses[0].id, (group, msg)
    summary["tool"] = [msg.stop_reason, uses[0].name, uses[0].input]

    with client.messages.stream(model=group, max_tokens=50, messages=messages, tools=tools, extra_body=tool_mock) as stream:
        final = stream.get_final_message()
    uses = [b for b in final.content if b.type == "tool_use"]
    summary["stream_tool"] = [final.stop_reason, uses[0].name, uses[0].input]

    try:
        client.messages.create(model=group, max_tokens=50, messages=messages, extra_body={"mock": {"status": 429}})
        raise AssertionError(f"{group}: expected RateLimitError")
    except anthropic.RateLimitError as e:
        assert e.status_code == 429
    summary["errors"] = "ok"
    print(json.dumps(summary, sort_keys=True))

print("checks passed")
