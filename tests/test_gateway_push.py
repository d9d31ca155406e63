"""Push of recommendation lists: the fan-out rules (only changes, bounded per-client
queues), SSE and WebSocket against a real Redis, heartbeats, Last-Event-ID resume, a slow
client that cannot hold up the others, the item in view left out (``?exclude=``), and the
served files and OpenAPI document."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import uuid

import httpx
import orjson
import pytest
import redis
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from gateway import serve_in_thread, sign_token
from gateway.fanout import Hub, HubFull, RecMessage, Subscriber, message_from_latest

SECRET = "push-test-secret-0123456789abcdef"


def _msg(seq: int, items: tuple[str, ...], user: str = "u1") -> RecMessage:
    return RecMessage(user, seq, items, 0.0, orjson.dumps({"seq": seq, "items": items}))


# -- the fan-out rules, without a network

def test_only_newer_and_changed_lists_are_queued():
    sub = Subscriber("u1", maxlen=8)
    assert sub.offer(_msg(1, ("a", "b")))
    assert not sub.offer(_msg(2, ("a", "b")))  # same list
    assert not sub.offer(_msg(1, ("c",)))  # older than what the client has
    assert sub.offer(_msg(3, ("b", "a")))  # order changed
    assert [m.seq for m in sub.pending] == [1, 3]


def test_a_slow_subscriber_keeps_only_the_newest_lists_and_nobody_waits():
    hub = Hub(max_clients=10, max_per_user=5, queue_len=4)
    slow, fast = hub.subscribe("u1"), hub.subscribe("u1")

    async def drain_fast():
        got = []
        for seq in range(1, 1001):
            hub.publish(_msg(seq, (f"p{seq}",)))
            got += [m.seq for m in await fast.next_batch(0.01)]
        return got

    started = time.perf_counter()
    got = asyncio.run(drain_fast())
    assert time.perf_counter() - started < 2.0
    assert got == list(range(1, 1001))
    assert [m.seq for m in slow.pending] == [997, 998, 999, 1000]
    assert slow.dropped == 996


def _scored(seq: int, items: list[str], user: str = "u1") -> RecMessage:
    return message_from_latest(orjson.dumps({"user_id": user, "seq": seq, "items": [
        {"item_id": i, "score": round(1.0 / (n + 1), 4)} for n, i in enumerate(items)]}))


def test_a_subscriber_with_exclude_gets_lists_without_those_items_in_the_same_order():
    sub = Subscriber("u1", maxlen=8, exclude=frozenset({"p2", "p9"}))
    assert sub.offer(_scored(1, ["p1", "p2", "p3", "p4"]))
    # The excluded item moved: what this client sees is the same list, so nothing is sent.
    assert not sub.offer(_scored(2, ["p2", "p1", "p3", "p4"]))
    assert sub.offer(_scored(3, ["p9", "p4", "p3", "p1"]))
    sent = [orjson.loads(m.body)["items"] for m in sub.pending]
    assert sent == [[{"item_id": "p1", "score": 1.0}, {"item_id": "p3", "score": 0.3333},
                     {"item_id": "p4", "score": 0.25}],
                    [{"item_id": "p4", "score": 0.5}, {"item_id": "p3", "score": 0.3333},
                     {"item_id": "p1", "score": 0.25}]]
    # Another connection of the same user without exclude still gets the whole list.
    hub = Hub(max_clients=10, max_per_user=5, queue_len=4)
    plain, product_page = hub.subscribe("u1"), hub.subscribe("u1", exclude=frozenset({"p2"}))
    assert hub.publish(_scored(1, ["p2", "p1"])) == 2
    assert plain.pending[0].fingerprint == ("p2", "p1")
    assert product_page.pending[0].fingerprint == ("p1",)


def test_connection_limits():
    hub = Hub(max_clients=3, max_per_user=2, queue_len=1)
    a, _ = hub.subscribe("u1"), hub.subscribe("u1")
    with pytest.raises(HubFull) as info:
        hub.subscribe("u1")
    assert info.value.per_user
    hub.subscribe("u2")
    with pytest.raises(HubFull) as info:
        hub.subscribe("u3")
    assert not info.value.per_user
    hub.unsubscribe(a)
    hub.subscribe("u3")
    assert hub.clients == 3


# -- against a real Redis

@pytest.fixture(scope="module")
def gateway(kafka, redis_server):
    prefix = f"push{uuid.uuid4().hex[:6]}"
    env = {"KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap, "REDIS_URL": redis_server.url,
           "STREAMREC_PREFIX": prefix, "STREAMREC_GATEWAY_SECRET": SECRET,
           "STREAMREC_GATEWAY_HEARTBEAT": "0.3"}
    with serve_in_thread(env, demo=False) as handle:
        handle.prefix = prefix
        handle.redis = redis.Redis.from_url(redis_server.url)
        yield handle
        handle.redis.close()


def publish(gw, user: str, seq: int, items: list[str], pad: int = 0) -> None:
    """What the worker's Redis sink writes: a stream entry and the latest list."""
    now = time.time()
    scored = [{"item_id": i, "score": 1.0 / (n + 1)} for n, i in enumerate(items)]
    fields = {"user_id": user, "trigger_event_id": f"{user}-e{seq}", "event_ts": repr(now),
              "emitted_at": repr(now), "items": orjson.dumps(scored), "strategy": "covis" + "x" * pad,
              "model_version": "test", "seq": str(seq), "ingested_at": repr(now)}
    gw.redis.xadd(f"{gw.prefix}:recs", fields)
    gw.redis.set(f"{gw.prefix}:latest:{user}", orjson.dumps({**fields, "items": scored, "seq": seq}))


class SSEReader:
    """Reads an SSE response on a thread, collecting events and comments."""

    def __init__(self, gw, user: str, token: str | None = None, last_event_id: str | None = None,
                 exclude: list[str] | None = None):
        headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
        self.client = httpx.Client(timeout=httpx.Timeout(10.0))
        self.cm = self.client.stream("GET", f"{gw.url}/v1/users/{user}/recommendations/stream",
                                     params={"token": token or sign_token(user, SECRET),
                                             "exclude": exclude or []}, headers=headers)
        self.response = self.cm.__enter__()
        assert self.response.status_code == 200
        assert self.response.headers["content-type"].startswith("text/event-stream")
        self.events: list[dict] = []
        self.comments: list[str] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        current: dict = {}
        try:
            for line in self.response.iter_lines():
                if line.startswith(":"):
                    self.comments.append(line)
                elif line.startswith("id: "):
                    current["id"] = line[4:]
                elif line.startswith("data: "):
                    current["data"] = orjson.loads(line[6:])
                elif line == "" and "data" in current:
                    self.events.append(current)
                    current = {}
        except (httpx.HTTPError, RuntimeError):
            pass

    def wait(self, count: int, timeout: float = 5.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while len(self.events) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.events

    def close(self) -> None:
        self.client.close()


def test_sse_sends_the_current_list_then_only_changes_for_that_user(gateway):
    publish(gateway, "alice", 1, ["p1", "p2"])
    reader = SSEReader(gateway, "alice")
    try:
        assert [e["data"]["items"][0]["item_id"] for e in reader.wait(1)] == ["p1"]
        publish(gateway, "bob", 1, ["x"])  # another user's list: not for alice
        publish(gateway, "alice", 2, ["p1", "p2"])  # unchanged: not sent
        publish(gateway, "alice", 3, ["p3", "p1"])
        events = reader.wait(2)
        time.sleep(0.3)
        assert [(e["id"], [i["item_id"] for i in e["data"]["items"]]) for e in reader.events] == [
            ("1", ["p1", "p2"]), ("3", ["p3", "p1"])]
        assert events[1]["data"]["user_id"] == "alice" and events[1]["data"]["rec_id"] == "alice-e3"
        time.sleep(0.5)
        assert ": heartbeat" in reader.comments
    finally:
        reader.close()


def test_sse_resumes_from_last_event_id(gateway):
    publish(gateway, "carol", 5, ["p5"])
    up_to_date = SSEReader(gateway, "carol", last_event_id="5")
    behind = SSEReader(gateway, "carol", last_event_id="4")
    try:
        assert [e["id"] for e in behind.wait(1)] == ["5"]
        time.sleep(0.4)
        assert up_to_date.events == []  # it already has list 5
        publish(gateway, "carol", 6, ["p6"])
        assert [e["id"] for e in up_to_date.wait(1)] == ["6"]
    finally:
        up_to_date.close()
        behind.close()


def test_every_connection_of_a_user_gets_the_list_and_a_stalled_one_holds_up_nobody(gateway):
    publish(gateway, "dave", 1, ["p0"])
    # A client that connects and then never reads: its socket buffers fill up.
    stalled = socket.create_connection(("127.0.0.1", int(gateway.url.rsplit(":", 1)[1])))
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.sendall(f"GET /v1/users/dave/recommendations/stream?token={sign_token('dave', SECRET)} "
                    "HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    readers = [SSEReader(gateway, "dave") for _ in range(3)]
    try:
        for r in readers:
            r.wait(1)
        for seq in range(2, 302):  # ~16 KB per list, ~5 MB in all: far more than the stalled socket holds
            publish(gateway, "dave", seq, [f"p{seq}"], pad=16000)
        for r in readers:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and (not r.events or r.events[-1]["id"] != "301"):
                time.sleep(0.02)
            assert r.events[-1]["id"] == "301"
        health = httpx.get(f"{gateway.url}/healthz").json()
        assert health["push"]["clients"] >= 4
    finally:
        stalled.close()
        for r in readers:
            r.close()


def test_websocket_gets_the_same_lists_and_heartbeats(gateway):
    publish(gateway, "erin", 1, ["p1"])
    url = gateway.url.replace("http://", "ws://") + f"/v1/users/erin/recommendations/ws?token={sign_token('erin', SECRET)}"
    with connect(url, open_timeout=5) as ws:
        first = orjson.loads(ws.recv(timeout=5))
        assert first["type"] == "recommendations" and first["seq"] == 1
        publish(gateway, "erin", 2, ["p2"])
        frames = [orjson.loads(ws.recv(timeout=5)) for _ in range(2)]
        kinds = [f["type"] for f in frames]
        assert "recommendations" in kinds
        assert [f["seq"] for f in frames if f["type"] == "recommendations"] == [2]
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            if orjson.loads(ws.recv(timeout=3))["type"] == "heartbeat":
                break
        else:
            pytest.fail("no heartbeat")


def test_tracker_storefront_health_and_openapi_are_served(gateway):
    r = httpx.get(f"{gateway.url}/v1/tracker.js")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/javascript")
    assert "export function createTracker" in r.text
    assert httpx.get(f"{gateway.url}/demo/").status_code == 200
    assert httpx.get(f"{gateway.url}/static/storefront.js").status_code == 200
    assert httpx.get(f"{gateway.url}/demo/session").status_code == 404  # not in demo mode
    health = httpx.get(f"{gateway.url}/healthz").json()
    assert health["status"] == "ok" and health["redis"]["connected"] and health["kafka"]["available"]
    doc = httpx.get(f"{gateway.url}/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    from gateway import create_app  # noqa: F401  (the routes below are the app's own)

    served = {route.path for route in gateway.server.config.app.routes if route.path != "/static"}
    assert served - {"/demo"} <= set(doc["paths"]), served - set(doc["paths"])


# -- the item in view: ?exclude= on the point read, SSE and WebSocket

LIST = ["p1", "p2", "p3", "p4", "p5"]


def _get(gw, user: str, exclude: list[str] | None = None) -> httpx.Response:
    return httpx.get(f"{gw.url}/v1/users/{user}/recommendations",
                     params={"token": sign_token(user, SECRET), "exclude": exclude or []})


def test_point_read_leaves_out_the_excluded_items_and_the_stored_list_keeps_them(gateway):
    publish(gateway, "frank", 4, LIST)
    whole = _get(gateway, "frank").json()
    assert [i["item_id"] for i in whole["items"]] == LIST
    one = _get(gateway, "frank", ["p1"]).json()
    assert one["items"] == whole["items"][1:]  # same order, same scores
    two = _get(gateway, "frank", ["p4", "p2", "not-in-the-list"]).json()
    assert [i["item_id"] for i in two["items"]] == ["p1", "p3", "p5"]
    assert {k: v for k, v in two.items() if k != "items"} == {k: v for k, v in whole.items() if k != "items"}
    stored = orjson.loads(gateway.redis.get(f"{gateway.prefix}:latest:frank"))
    assert [i["item_id"] for i in stored["items"]] == LIST
    (_, fields), = gateway.redis.xrevrange(f"{gateway.prefix}:recs", count=1)
    assert [i["item_id"] for i in orjson.loads(fields[b"items"])] == LIST


@pytest.mark.parametrize("exclude, says", [
    ([f"p{n}" for n in range(21)], "at most 20 item ids"),
    ([""], "1 to 256 characters"),
    (["x" * 257], "1 to 256 characters"),
])
def test_a_bad_exclude_is_refused_with_400_on_every_read(gateway, exclude, says):
    publish(gateway, "gina", 1, LIST)
    token = sign_token("gina", SECRET)
    r = _get(gateway, "gina", exclude)
    assert r.status_code == 400 and says in r.json()["error"], r.text
    r = httpx.get(f"{gateway.url}/v1/users/gina/recommendations/stream",
                  params={"token": token, "exclude": exclude}, timeout=5)
    assert r.status_code == 400 and says in r.json()["error"], r.text
    query = str(httpx.QueryParams({"token": token, "exclude": exclude}))
    url = gateway.url.replace("http://", "ws://") + f"/v1/users/gina/recommendations/ws?{query}"
    with pytest.raises(InvalidStatus) as info:
        connect(url, open_timeout=5)
    assert info.value.response.status_code == 400
    # Twenty is fine, and a bad exclude never hides a bad token: that is still a 401.
    assert _get(gateway, "gina", [f"p{n}" for n in range(20)]).status_code == 200
    assert httpx.get(f"{gateway.url}/v1/users/gina/recommendations",
                     params={"exclude": exclude}).status_code == 401


def test_sse_with_exclude_never_sends_the_item_in_view(gateway):
    publish(gateway, "hana", 1, LIST)
    reader = SSEReader(gateway, "hana", exclude=["p3"])
    plain = SSEReader(gateway, "hana")
    try:
        reader.wait(1)
        publish(gateway, "hana", 2, ["p3", "p1", "p2", "p4", "p5"])  # only p3 moved: not sent
        publish(gateway, "hana", 3, ["p5", "p3", "p4"])
        reader.wait(2)
        plain.wait(3)
        time.sleep(0.3)
        assert [(e["id"], [i["item_id"] for i in e["data"]["items"]]) for e in reader.events] == [
            ("1", ["p1", "p2", "p4", "p5"]), ("3", ["p5", "p4"])]
        assert [[i["item_id"] for i in e["data"]["items"]] for e in plain.events] == [
            LIST, ["p3", "p1", "p2", "p4", "p5"], ["p5", "p3", "p4"]]
        assert reader.events[1]["data"]["items"] == [plain.events[2]["data"]["items"][0],
                                                    plain.events[2]["data"]["items"][2]]
    finally:
        reader.close()
        plain.close()


def test_websocket_with_exclude_never_sends_the_item_in_view(gateway):
    publish(gateway, "ivan", 1, LIST)
    query = str(httpx.QueryParams({"token": sign_token("ivan", SECRET), "exclude": ["p1", "p5"]}))
    url = gateway.url.replace("http://", "ws://") + f"/v1/users/ivan/recommendations/ws?{query}"
    with connect(url, open_timeout=5) as ws:
        first = orjson.loads(ws.recv(timeout=5))
        assert [i["item_id"] for i in first["items"]] == ["p2", "p3", "p4"]
        publish(gateway, "ivan", 2, ["p5", "p4", "p1", "p2"])
        lists = []
        deadline = time.monotonic() + 5
        while not lists and time.monotonic() < deadline:
            frame = orjson.loads(ws.recv(timeout=5))
            if frame["type"] == "recommendations":
                lists.append(frame)
        assert [(f["seq"], [i["item_id"] for i in f["items"]]) for f in lists] == [(2, ["p4", "p2"])]
