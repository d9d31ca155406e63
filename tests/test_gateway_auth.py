"""Who may read whose recommendations: tokens on every read path (GET, SSE, WebSocket),
and `streamrec token`. Wrong or missing token -> 401/403 and no data."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid

import httpx
import orjson
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from gateway import serve_in_thread, sign_token, verify_token
from gateway.tokens import TokenError

pytestmark = pytest.mark.integration

SECRET = "test-secret-with-enough-characters"


@pytest.fixture(scope="module")
def gateway(kafka, redis_server):
    run = uuid.uuid4().hex[:8]
    env = {"KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap, "REDIS_URL": redis_server.url,
           "STREAMREC_PREFIX": f"auth{run}", "STREAMREC_EVENTS_TOPIC": f"auth-{run}",
           "STREAMREC_GATEWAY_SECRET": SECRET}
    handle = serve_in_thread(env, demo=False)
    # A list for alice, so a successful read has data to return.
    import redis

    client = redis.Redis.from_url(redis_server.url)
    client.set(f"auth{run}:latest:alice", orjson.dumps({
        "user_id": "alice", "trigger_event_id": "e1", "event_ts": time.time(), "emitted_at": time.time(),
        "items": [{"item_id": "p1", "score": 1.0}], "strategy": "covis", "model_version": "t", "seq": 3}))
    client.close()
    yield handle
    handle.stop()


def _tokens() -> dict[str, str | None]:
    good = sign_token("alice", SECRET, ttl=600)
    forged_sig = good.rsplit(".", 1)[0] + "." + sign_token("alice", "another-secret-16chars!", ttl=600).rsplit(".", 1)[1]
    body = good.split(".")
    # Same signature, but the user id swapped for bob: the signature no longer matches.
    tampered = ".".join([body[0], sign_token("bob", SECRET).split(".")[1], body[2], body[3]])
    return {
        "none": None,
        "garbage": "not-a-token",
        "forged": forged_sig,
        "tampered": tampered,
        "expired": sign_token("alice", SECRET, ttl=-1),
        "other_user": sign_token("bob", SECRET, ttl=600),
    }


EXPECTED = {"none": 401, "garbage": 401, "forged": 401, "tampered": 401, "expired": 401,
            "other_user": 403}


def test_token_round_trip_and_failures():
    token = sign_token("user.with.dots", SECRET, ttl=60)
    assert verify_token(token, SECRET) == "user.with.dots"
    reasons = {}
    for name, bad in _tokens().items():
        if name == "other_user":
            continue
        with pytest.raises(TokenError) as info:
            verify_token(bad, SECRET)
        reasons[name] = info.value.reason
    assert reasons == {"none": "token:missing", "garbage": "token:malformed",
                       "forged": "token:bad_signature", "tampered": "token:bad_signature",
                       "expired": "token:expired"}


@pytest.mark.parametrize("case", list(EXPECTED))
@pytest.mark.parametrize("how", ["query", "header"])
def test_latest_list_needs_the_users_own_token(gateway, case, how):
    token = _tokens()[case]
    kwargs = {}
    if token is not None:
        kwargs = {"params": {"token": token}} if how == "query" else {"headers": {"Authorization": f"Bearer {token}"}}
    r = httpx.get(f"{gateway.url}/v1/users/alice/recommendations", **kwargs)
    assert r.status_code == EXPECTED[case], r.text
    assert "items" not in r.text and "p1" not in r.text
    if r.status_code == 401:
        assert r.headers["www-authenticate"].startswith("Bearer")


def test_latest_list_with_the_right_token(gateway):
    r = httpx.get(f"{gateway.url}/v1/users/alice/recommendations",
                  headers={"Authorization": f"Bearer {sign_token('alice', SECRET)}"})
    assert r.status_code == 200
    assert r.json()["items"] == [{"item_id": "p1", "score": 1.0}] and r.json()["seq"] == 3


@pytest.mark.parametrize("case", list(EXPECTED))
def test_sse_stream_refuses_bad_tokens_with_no_data(gateway, case):
    token = _tokens()[case]
    params = {"token": token} if token else {}
    with httpx.stream("GET", f"{gateway.url}/v1/users/alice/recommendations/stream", params=params,
                      timeout=5) as r:
        assert r.status_code == EXPECTED[case]
        body = r.read()
    assert b"p1" not in body and b"data:" not in body


@pytest.mark.parametrize("case", list(EXPECTED))
def test_websocket_refuses_bad_tokens_before_the_upgrade(gateway, case):
    token = _tokens()[case]
    url = gateway.url.replace("http://", "ws://") + "/v1/users/alice/recommendations/ws"
    if token:
        url += f"?token={token}"
    with pytest.raises(InvalidStatus) as info:
        with connect(url, open_timeout=5):
            pass
    assert info.value.response.status_code == EXPECTED[case]
    assert b"p1" not in (info.value.response.body or b"")


def test_streamrec_token_command_prints_a_token_the_gateway_accepts(gateway):
    env = {"STREAMREC_GATEWAY_SECRET": SECRET, "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-m", "streamrec.cli", "token", "alice", "--ttl", "60"],
                         env=env, capture_output=True, text=True, check=True)
    token = out.stdout.strip()
    assert verify_token(token, SECRET) == "alice"
    r = httpx.get(f"{gateway.url}/v1/users/alice/recommendations", params={"token": token})
    assert r.status_code == 200


def test_streamrec_token_without_a_secret_says_how_to_set_one():
    out = subprocess.run([sys.executable, "-m", "streamrec.cli", "token", "alice"],
                         env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True)
    assert out.returncode == 2
    assert "STREAMREC_GATEWAY_SECRET is not set" in out.stderr
