"""The OpenAI SDK's Responses API (`client.responses.create`) against every provider.

Usage: python responses_sdk_check.py <gateway base url> <master key> <model group>...
OpenAI and Azure groups reach the provider's own Responses API; the others are translated to
their chat APIs and back. Through the SDK the answers must look the same: text, status, output
token counts, the stream's event sequence, function calls and a function-call round trip.
Prints one JSON summary per group. Exits non-zero on the first failed expectation.
"""

import json
import sys

import openai
from openai import OpenAI

base_url, key, groups = sys.argv[1], sys.argv[2], sys.argv[3:]
client = OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=20)
tools = [{"type": "function", "name": "get_weather", "description": "Weather",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}]
tool_mock = {"mock": {"tool_call": {"name": "get_weather", "arguments": {"city": "Paris"}}}}


def collapse(types):
    """Event types with repeats of one type in a row folded into one."""
    out = []
    for t in types:
        if not out or out[-1] != t:
            out.append(t)
    return out


for group in groups:
    summary = {"group": group}
    # Plain text.
    r = client.responses.create(model=group, input="Say hello", instructions="You are terse.",
                                max_output_tokens=50)
    assert r.object == "response", (group, r)
    assert r.id, (group, r)
    assert r.usage.input_tokens > 0, (group, r.usage)
    assert r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens, (group, r.usage)
    summary["text"] = r.output_text
    summary["status"] = r.status
    summary["output_tokens"] = r.usage.output_tokens

    # Streaming text: the event sequence, the deltas, and the completed Response.
    types, deltas, completed = [], [], None
    for event in client.responses.create(model=group, input="Say hello", stream=True):
        types.append(event.type)
        if event.type == "response.output_text.delta":
            deltas.append(event.delta)
        if event.type == "response.completed":
            completed = event.response
    assert completed is not None, (group, types)
    assert completed.output_text == "".join(deltas), (group, completed)
    summary["stream_text"] = "".join(deltas)
    summary["stream_events"] = collapse(types)
    summary["stream_output_tokens"] = completed.usage.output_tokens

    # A function call, then its result sent back (the round trip agents make).
    r = client.responses.create(model=group, input="Weather in Paris?", tools=tools,
                                extra_body=tool_mock)
    call = next(item for item in r.output if item.type == "function_call")
    assert call.call_id, (group, call)
    summary["tool"] = [call.name, json.loads(call.arguments)]
    follow = client.responses.create(model=group, tools=tools, input=[
        {"role": "user", "content": "Weather in Paris?"},
        {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
        {"type": "function_call_output", "call_id": call.call_id, "output": "18C and sunny"},
    ])
    summary["tool_followup"] = follow.output_text

    # A streamed function call.
    args, name = "", None
    for event in client.responses.create(model=group, input="Weather in Paris?", tools=tools,
                                         stream=True, extra_body=tool_mock):
        if event.type == "response.output_item.added" and event.item.type == "function_call":
            name = event.item.name
        if event.type == "response.function_call_arguments.delta":
            args += event.delta
    summary["stream_tool"] = [name, json.loads(args)]

    # A conversation continued by id, then read back, its input listed, and deleted.
    first = client.responses.create(model=group, input="My name is Ada.")
    second = client.responses.create(model=group, input="What is my name?",
                                     previous_response_id=first.id)
    assert second.previous_response_id == first.id, (group, second)
    got = client.responses.retrieve(second.id)
    assert got.id == second.id and got.output_text == second.output_text, (group, got)
    items = client.responses.input_items.list(second.id)
    summary["input_items"] = [[i.type, i.role, i.content[0].text] for i in items.data]
    client.responses.delete(second.id)
    try:
        client.responses.retrieve(second.id)
        raise AssertionError((group, "deleted response still retrievable"))
    except openai.NotFoundError:
        pass
    try:
        client.responses.create(model=group, input="Again?", previous_response_id="resp_nope")
        raise AssertionError((group, "unknown previous_response_id accepted"))
    except openai.BadRequestError as e:
        summary["unknown_previous"] = e.body["message"] if isinstance(e.body, dict) else str(e.body)
    print(json.dumps(summary))
