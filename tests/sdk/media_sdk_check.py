"""The OpenAI SDK's images, audio and moderations calls through Sluice.

Usage: python media_sdk_check.py <gateway base url> <master key>
Prints one JSON summary. Exits non-zero on the first failed expectation.
"""

import io
import json
import sys

from openai import OpenAI

base_url, key = sys.argv[1], sys.argv[2]
client = OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=20)
summary = {}

images = client.images.generate(model="dalle", prompt="a lighthouse", n=2, size="1024x1024")
summary["images"] = len(images.data)
assert all(i.url for i in images.data), images

with client.audio.speech.with_streaming_response.create(
    model="tts", voice="alloy", input="Hi", extra_body={"mock": {"chunks": 1}}
) as speech:
    assert speech.headers["content-type"] == "audio/mpeg", speech.headers
    summary["speech"] = b"".join(speech.iter_bytes()).decode()

audio = io.BytesIO(b"RIFF")
audio.name = "hello.wav"
transcript = client.audio.transcriptions.create(model="whisper", file=audio)
summary["transcription"] = transcript.text

moderation = client.moderations.create(model="moderation", input="hello")
summary["flagged"] = moderation.results[0].flagged

print(json.dumps(summary))
