"""Redis outages against a real worker: Redis paused (SIGSTOP) and Redis restarted while
events flow. The worker must stay alive, hold its batch (backpressure), log each outage
once, count it, and afterwards every user's latest list must reflect their last event."""

from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path

import httpx
import orjson
import pytest
import redis

from bench.workload import expected_full
from connectors.embedded import EmbeddedRedis, ensure_topics
from connectors.redis_sink import RedisSink
from workloads.traffic import TrafficConfig, generate_events
from connectors.worker import WorkerGroup
from operators.messages import RecUpdate
from streamrec.errors import RedisUnavailableError
from streamrec.metrics import REDIS_ERRORS
from test_ops_endpoint import produce, scrape

pytestmark = pytest.mark.integration

PAUSE_S = 15.0


def _events(n: int, seed: int) -> list[dict]:
    cfg = TrafficConfig(n_users=40, n_items=200, n_categories=5, seed=seed,
                        start_ts=time.time() - 5 * 86400)
    return list(generate_events(cfg, n))


def _send(bootstrap: str, topic: str, events: list[dict]) -> None:
    produce(bootstrap, topic, [(e["user_id"].encode(), orjson.dumps(e)) for e in events])


def _missing(client: redis.Redis, prefix: str, expected: dict[str, str]) -> list[str]:
    """Users whose latest list is not (yet) the one after their expected last event."""
    out = []
    for user, event_id in expected.items():
        raw = client.get(f"{prefix}:latest:{user}")
        if raw is None or orjson.loads(raw)["trigger_event_id"] != event_id:
            out.append(user)
    return out


def _wait_caught_up(client, prefix, expected, group: WorkerGroup, timeout: float) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            if not _missing(client, prefix, expected):
                return time.monotonic() - t0
        except redis.ConnectionError:
            pass  # our own client may still hold a dead connection
        assert group.alive(), group.log_tail(60)
        time.sleep(0.2)
    pytest.fail(f"not caught up after {timeout}s: {len(_missing(client, prefix, expected))} "
                f"users without their last list\n{group.log_tail(60)}")


def _log_text(log_dir: Path) -> str:
    return "\n".join(p.read_text(errors="replace") for p in sorted(log_dir.glob("worker-*.log")))


@pytest.fixture
def own_redis(tmp_path):
    """A Redis of this test alone: it gets paused and killed."""
    server = EmbeddedRedis(log_dir=tmp_path / "redis-1").start()
    holder = {"server": server}
    yield holder
    server = holder["server"]
    if server.pid is not None:
        try:
            os.kill(server.pid, signal.SIGCONT)  # a paused server cannot stop
        except ProcessLookupError:
            pass
    server.stop()


def _start(kafka, server: EmbeddedRedis, tmp_path, **extra) -> tuple[str, str, WorkerGroup]:
    topic, prefix = f"outage-{uuid.uuid4().hex[:8]}", f"out{uuid.uuid4().hex[:6]}"
    ensure_topics(kafka.bootstrap, {topic: 1, f"{topic}.dlq": 1})
    env = {"KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap, "REDIS_URL": server.url,
           "STREAMREC_EVENTS_TOPIC": topic, "STREAMREC_CONSUME_ITEMS": "0",
           "STREAMREC_PREFIX": prefix, "STREAMREC_REDIS_TIMEOUT": "1",
           "STREAMREC_REDIS_RETRY_BUDGET": "120", **extra}
    group = WorkerGroup(env, log_dir=tmp_path / "logs").start()
    return topic, prefix, group


def test_redis_paused_for_15s_the_worker_waits_and_catches_up(kafka, own_redis, tmp_path):
    server = own_redis["server"]
    topic, prefix, group = _start(kafka, server, tmp_path)
    client = redis.Redis.from_url(server.url, socket_timeout=2)
    (url,) = group.metrics_urls
    try:
        before, during = _events(200, seed=21), _events(400, seed=22)
        _send(kafka.bootstrap, topic, before)
        _wait_caught_up(client, prefix, expected_full(before), group, timeout=90)

        os.kill(server.pid, signal.SIGSTOP)
        paused_at = time.monotonic()
        try:
            _send(kafka.bootstrap, topic, during)
            not_ready = False
            while time.monotonic() - paused_at < PAUSE_S:
                assert group.alive(), group.log_tail(60)
                resp = httpx.get(f"{url}/readyz", timeout=10)
                not_ready = not_ready or resp.status_code == 503
                time.sleep(0.5)
        finally:
            os.kill(server.pid, signal.SIGCONT)
        took = _wait_caught_up(client, prefix, expected_full(before + during), group, timeout=90)
        print(f"\ncatch-up after a {PAUSE_S:.0f}s pause: {took:.2f}s")
        assert not_ready, "readiness never reported the paused Redis"
        # Readiness follows within a probe interval (probes are cached for 2 s).
        deadline = time.monotonic() + 15
        while httpx.get(f"{url}/readyz", timeout=10).status_code != 200:
            assert time.monotonic() < deadline, httpx.get(f"{url}/readyz", timeout=10).text
            time.sleep(0.5)

        metrics = scrape(url)
        errors = {s[0]["kind"]: s[1] for s in metrics["streamrec_redis_errors_total"]}
        assert errors.get("timeout", 0) + errors.get("connection", 0) >= 1
        assert metrics["streamrec_redis_retries_total"][0][1] >= 1
        assert metrics["streamrec_redis_up"][0][1] == 1
        assert group.alive()
    finally:
        group.stop()
        client.close()
    log = _log_text(tmp_path / "logs")
    assert log.count("is unreachable") == 1, log[-3000:]
    assert log.count("is back after") == 1, log[-3000:]


def test_redis_restarted_on_the_same_port_the_worker_reconnects(kafka, own_redis, tmp_path):
    server = own_redis["server"]
    port = server.port
    topic, prefix, group = _start(kafka, server, tmp_path)
    try:
        before, during = _events(200, seed=31), _events(400, seed=32)
        _send(kafka.bootstrap, topic, before)
        client = redis.Redis.from_url(server.url, socket_timeout=2)
        _wait_caught_up(client, prefix, expected_full(before), group, timeout=90)
        client.close()

        os.kill(server.pid, signal.SIGKILL)  # a crash: no shutdown, no data kept
        server.stop(cleanup=False)
        _send(kafka.bootstrap, topic, during)
        time.sleep(5.0)
        assert group.alive(), group.log_tail(60)
        server = own_redis["server"] = EmbeddedRedis(port=port, log_dir=tmp_path / "redis-2").start()
        client = redis.Redis.from_url(server.url, socket_timeout=2)
        # The restarted Redis is empty: the lists to find are those of the events sent
        # during the outage (each user's last one), all written after the restart.
        expected = expected_full(before + during)
        late = {e["event_id"] for e in during}
        expected = {u: e for u, e in expected.items() if e in late}
        took = _wait_caught_up(client, prefix, expected, group, timeout=90)
        print(f"\ncatch-up after a restart (5s down): {took:.2f}s")
        client.close()
        assert group.alive()
    finally:
        group.stop()
    log = _log_text(tmp_path / "logs")
    assert log.count("is unreachable") == 1, log[-3000:]
    assert log.count("is back after") == 1, log[-3000:]


def test_a_batch_fails_loudly_once_the_retry_budget_is_spent(tmp_path):
    from connectors.embedded import free_port

    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"  # nobody listens there
    part = RedisSink(url, "gone", timeout=0.2, retries=1, retry_budget=1.0).build("out", 0, 1)
    before = REDIS_ERRORS.labels(kind="connection")._value.get()
    t0 = time.monotonic()
    with pytest.raises(RedisUnavailableError) as info:
        part.write_batch([RecUpdate("u", "u", 1, "e1", 1.0, None, [("p", 1.0)], "covis", "t")])
    assert 1.0 <= time.monotonic() - t0 < 15.0
    message = str(info.value)
    assert "STREAMREC_REDIS_RETRY_BUDGET" in message and "hunter2" not in message
    assert ":***@127.0.0.1" in message
    assert REDIS_ERRORS.labels(kind="connection")._value.get() > before
    part.close()
