"""A LiteLLM user's key-management script, run unchanged against Sluice: teams, users and keys
with budgets through the admin API (plain HTTP requests, as LiteLLM's docs show them), the keys used with
the official OpenAI SDK until their budget stops them.

Usage: python key_management_check.py <gateway base url> <master key>
The gateway's deployments cost 0.05 USD per call. Exits non-zero on the first failed expectation.
"""

import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

import openai
from openai import OpenAI

base_url, master_key = sys.argv[1], sys.argv[2]
COST = 0.05
suffix = uuid.uuid4().hex[:8]


class Response:
    def __init__(self, status_code, text):
        self.status_code, self.text = status_code, text

    def json(self):
        return json.loads(self.text)


class Admin:
    """The few lines of HTTP an admin script needs (the standard library only)."""

    def _call(self, method, path, params=None, body=None):
        url = base_url.rstrip("/") + path + ("?" + urllib.parse.urlencode(params) if params else "")
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(url, data=data, method=method)
        request.add_header("Authorization", f"Bearer {master_key}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=20) as r:
                return Response(r.status, r.read().decode())
        except urllib.error.HTTPError as e:
            return Response(e.code, e.read().decode())

    def get(self, path, params=None):
        return self._call("GET", path, params=params)

    def post(self, path, json=None):
        return self._call("POST", path, body=json if json is not None else {})


admin = Admin()


def ok(response):
    assert response.status_code == 200, (response.status_code, response.text)
    return response.json()


def eventually(check, seconds=10):
    deadline = time.time() + seconds
    while True:
        value = check()
        if value or time.time() > deadline:
            return value
        time.sleep(0.2)


# A team with a budget and its model list, a user, and a key for both.
team = ok(admin.post("/team/new", json={"team_alias": f"ml-{suffix}", "max_budget": 1.0, "models": ["gpt-4o"]}))
team_id = team["team_id"]
user = ok(admin.post("/user/new", json={"user_email": f"dev-{suffix}@example.com", "user_role": "internal_user", "auto_create_key": False}))
user_id = user["user_id"]
generated = ok(
    admin.post(
        "/key/generate",
        json={
            "team_id": team_id,
            "user_id": user_id,
            "key_alias": f"dev-{suffix}",
            "max_budget": COST,
            "rpm_limit": 100,
            "duration": "30d",
            "metadata": {"project": "demo"},
        },
    )
)
key = generated["key"]
assert key.startswith("sk-"), generated
assert generated["expires"], generated

info = ok(admin.get("/key/info", params={"key": key}))["info"]
assert info["key_alias"] == f"dev-{suffix}", info
assert info["team_id"] == team_id and info["user_id"] == user_id, info
assert info["max_budget"] == COST and info["spend"] == 0, info
assert info["metadata"] == {"project": "demo"}, info

# The key works with the OpenAI SDK until its budget is spent.
client = OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=20)
raw = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}], max_tokens=5)
assert raw.parse().choices[0].message.content
assert float(raw.headers["x-litellm-response-cost"]) == COST, raw.headers
assert raw.headers["x-litellm-key-max-budget"] == str(COST), raw.headers


def chat_error():
    """None when a chat call with the key succeeds, else the SDK's error for it."""
    try:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}], max_tokens=5)
        return None
    except openai.APIStatusError as e:
        return e


e = chat_error()
assert isinstance(e, openai.BadRequestError), f"the budget did not stop the second call: {e!r}"
assert e.status_code == 400
assert "Budget has been exceeded" in e.message, e.message
assert e.body["type"] == "budget_exceeded", e.body

# Models outside the team's list are refused.
try:
    client.embeddings.create(model="text-embedding", input="x")
    raise AssertionError("a model outside the team's list was served")
except openai.AuthenticationError as e:
    assert e.status_code == 401, e

# Spend shows up on the key, its team and its user, and in the spend logs.
spent = eventually(lambda: ok(admin.get("/key/info", params={"key": key}))["info"]["spend"] == COST)
assert spent, ok(admin.get("/key/info", params={"key": key}))
teams = ok(admin.get("/team/list"))
mine = [t for t in teams if t["team_id"] == team_id]
assert mine and mine[0]["spend"] == COST, mine
team_info = ok(admin.get("/team/info", params={"team_id": team_id}))
assert [k["key_alias"] for k in team_info["keys"]] == [f"dev-{suffix}"], team_info
user_info = ok(admin.get("/user/info", params={"user_id": user_id}))
assert user_info["user_info"]["spend"] == COST, user_info
keys = ok(admin.get("/key/list", params={"team_id": team_id}))
assert keys["keys"] == [generated["token"]] and keys["total_count"] == 1, keys
logs = ok(admin.get("/spend/logs", params={"api_key": key}))
assert [round(r["spend"], 9) for r in logs if r["status"] == "success"] == [COST], logs

# Raising the budget lets the key call again; blocking and deleting stop it.
ok(admin.post("/key/update", json={"key": key, "max_budget": 1.0}))

assert eventually(lambda: chat_error() is None, 3), "the raised budget did not apply"
ok(admin.post("/key/block", json={"key": key}))
assert eventually(lambda: isinstance(chat_error(), openai.AuthenticationError), 3), "a blocked key kept working"
assert ok(admin.post("/key/delete", json={"keys": [key]}))["deleted_keys"] == [key]
missing = admin.get("/key/info", params={"key": key})
assert missing.status_code == 404, missing.text

print("key management checks passed")
