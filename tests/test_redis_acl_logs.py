"""A least-privilege Redis ACL user in REDIS_URL, JSON logs, and no secret or user id in
the worker's log (real worker, embedded broker and Redis)."""

from __future__ import annotations

import time
import uuid

import orjson
import pytest

from bench.workload import expected_full
from connectors.embedded import ensure_topics
from connectors.redis_retry import ACL_COMMANDS
from connectors.redis_sink import RedisSink
from workloads.traffic import TrafficConfig, generate_events
from connectors.worker import WorkerGroup
from operators.messages import RecUpdate
from streamrec.errors import ConfigError
from test_ops_endpoint import produce

pytestmark = pytest.mark.integration

PASSWORD = "pw-" + uuid.uuid4().hex  # nowhere in any log, whatever happens


@pytest.fixture
def acl_user(redis_server, redis_client):
    """An ACL user allowed exactly what the worker needs, on one key prefix."""
    user, prefix = f"streamrec-{uuid.uuid4().hex[:6]}", f"acl{uuid.uuid4().hex[:6]}"
    redis_client.execute_command("ACL", "SETUSER", user, "reset", "on", f">{PASSWORD}",
                                 f"~{prefix}:*", "resetchannels", "-@all", *ACL_COMMANDS.split())
    host_port = redis_server.url.split("://", 1)[1]
    yield f"redis://{user}:{PASSWORD}@{host_port}", prefix
    redis_client.execute_command("ACL", "DELUSER", user)


def test_worker_with_an_acl_user_and_json_logs_leaks_no_secret(
    kafka, redis_client, acl_user, unique_topic, tmp_path
):
    url, prefix = acl_user
    ensure_topics(kafka.bootstrap, {unique_topic: 1, f"{unique_topic}.dlq": 1})
    cfg = TrafficConfig(n_users=25, n_items=100, n_categories=4, seed=9,
                        start_ts=time.time() - 3 * 86400)
    events = list(generate_events(cfg, 300))
    erased = events[-1]["user_id"]
    events.append({"event_id": "erase-1", "ts": events[-1]["ts"] + 1, "user_id": erased,
                   "type": "erase"})
    produce(kafka.bootstrap, unique_topic, [(e["user_id"].encode(), orjson.dumps(e)) for e in events])
    produce(kafka.bootstrap, unique_topic, [(b"bad", b"not json")])
    env = {"KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap, "REDIS_URL": url,
           "STREAMREC_EVENTS_TOPIC": unique_topic, "STREAMREC_CONSUME_ITEMS": "0",
           "STREAMREC_PREFIX": prefix, "STREAMREC_LOG_FORMAT": "json",
           "KAFKA_SASL_PASSWORD": PASSWORD}  # unused on a plaintext listener; must not be logged
    group = WorkerGroup(env, log_dir=tmp_path / "logs").start()
    expected = expected_full(events)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert group.alive(), group.log_tail(60)
            latest = [redis_client.get(f"{prefix}:latest:{u}") for u in expected]
            if (all(raw and orjson.loads(raw)["trigger_event_id"] == expected[u]
                    for u, raw in zip(expected, latest))
                    and redis_client.xlen(f"{prefix}:dlq") == 1
                    and not redis_client.exists(f"{prefix}:profile:{erased}")):
                break
            time.sleep(0.3)
        else:
            pytest.fail(f"the ACL user's worker did not write every list\n{group.log_tail(60)}")
        assert group.alive()
    finally:
        group.stop()

    text = (tmp_path / "logs" / "worker-0.log").read_text()
    assert PASSWORD not in text
    records = [orjson.loads(line) for line in text.splitlines() if line.startswith("{")]
    assert records and all({"time", "level", "logger", "message"} <= set(r) for r in records)
    messages = " ".join(r["message"] for r in records)
    assert ":***@" in messages  # the Redis URL is logged, redacted
    assert "erased a user" in messages
    users = {e["user_id"] for e in events}
    assert not any(u in text for u in users), "a user id appears in the log"


def test_a_user_without_a_needed_command_gets_told_which(redis_server, redis_client):
    user, prefix = f"weak-{uuid.uuid4().hex[:6]}", f"weak{uuid.uuid4().hex[:6]}"
    redis_client.execute_command("ACL", "SETUSER", user, "reset", "on", f">{PASSWORD}",
                                 f"~{prefix}:*", "-@all", "+get", "+ping")
    host_port = redis_server.url.split("://", 1)[1]
    part = RedisSink(f"redis://{user}:{PASSWORD}@{host_port}", prefix).build("out", 0, 1)
    try:
        with pytest.raises(ConfigError) as info:
            part.write_batch([RecUpdate("u", "u", 1, "e1", 1.0, None, [("p", 1.0)], "covis", "t")])
        assert "+xadd" in str(info.value) and "docs/operations.md" in str(info.value)
        assert PASSWORD not in str(info.value)
    finally:
        part.close()
        redis_client.execute_command("ACL", "DELUSER", user)


def test_a_wrong_password_is_a_config_error_not_an_endless_retry(redis_server):
    host_port = redis_server.url.split("://", 1)[1]
    part = RedisSink(f"redis://nobody:{PASSWORD}@{host_port}", "x", retry_budget=300).build("o", 0, 1)
    t0 = time.monotonic()
    try:
        with pytest.raises(ConfigError) as info:
            part.write_batch([RecUpdate("u", "u", 1, "e1", 1.0, None, [("p", 1.0)], "covis", "t")])
        assert time.monotonic() - t0 < 30
        assert "REDIS_URL" in str(info.value) and PASSWORD not in str(info.value)
    finally:
        part.close()
