"""`streamrec rules` against a running worker, the embedded broker and Redis."""

from __future__ import annotations

import time
import uuid

import orjson
import pytest
from confluent_kafka import Producer

from connectors.embedded import ensure_topics
from connectors.worker import WorkerGroup
from streamrec.cli import main
from streamrec.rules_cli import load_records

pytestmark = pytest.mark.integration

NOW = time.time()


def _produce(bootstrap: str, topic: str, records: list[dict], key: str) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for r in records:
        producer.produce(topic, key=r[key].encode(), value=orjson.dumps(r))
    assert producer.flush(30) == 0


def _wait(predicate, workers: WorkerGroup, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        assert workers.alive(), f"worker died while waiting for {what}:\n{workers.log_tail()}"
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}:\n{workers.log_tail()}")


def test_rules_added_listed_and_deleted_through_a_running_worker(
    kafka, redis_server, redis_client, unique_topic, tmp_path, monkeypatch, capsys
):
    topic, prefix = unique_topic, f"rc{uuid.uuid4().hex[:6]}"
    ensure_topics(kafka.bootstrap, {topic: 1, f"{topic}-items": 1, f"{topic}.dlq": 1})
    env = {"KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap, "REDIS_URL": redis_server.url,
           "STREAMREC_EVENTS_TOPIC": topic, "STREAMREC_ITEMS_TOPIC": f"{topic}-items",
           "STREAMREC_CONTROLS_TOPIC": f"{topic}-controls", "STREAMREC_PREFIX": prefix,
           "STREAMREC_METRICS_PORT": "0"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    catalog = [{"item_id": f"p{i}", "category": "hats" if i % 2 else "shoes", "price": 10.0 * i}
               for i in range(30)]
    _produce(kafka.bootstrap, f"{topic}-items", catalog, "item_id")
    n = 0

    def view(user: str, item: str) -> str:
        nonlocal n
        n += 1
        _produce(kafka.bootstrap, topic, [{"event_id": f"e{n}", "ts": NOW + n, "user_id": user,
                                           "type": "view", "item_id": item}], "user_id")
        return f"e{n}"

    for i in range(40):
        view(f"u{i % 8}", f"p{(i * 7) % 30}")

    def latest(user: str) -> dict | None:
        raw = redis_client.get(f"{prefix}:latest:{user}")
        return orjson.loads(raw) if raw else None

    group = WorkerGroup(env, log_dir=tmp_path / "logs").start()
    try:
        _wait(lambda: latest("u1") is not None, group, "a first list")
        rule = '{"rule_id": "top", "action": "pin", "item_id": "p29", "position": 1}'
        assert main(["rules", "add", rule]) == 0
        assert "sent 1 rule record(s)" in capsys.readouterr().out
        _wait(lambda: redis_client.hexists(f"{prefix}:rules", "top"), group, "the rule applied")
        assert main(["rules", "list", "--json"]) == 0
        listed = orjson.loads(capsys.readouterr().out)
        assert listed == [{"rule_id": "top", "action": "pin", "item_id": "p29", "position": 1}]
        event = view("u1", "p4")
        _wait(lambda: (latest("u1") or {}).get("trigger_event_id") == event, group, "the next list")
        first = latest("u1")["items"][0]
        assert first["item_id"] == "p29" and first["reason"] == {"kind": "pinned", "rule": "top"}

        assert main(["rules", "delete", "top"]) == 0
        _wait(lambda: not redis_client.exists(f"{prefix}:rules"), group, "the rule deleted")
        assert main(["rules", "list"]) == 0
        assert "no rules in force" in capsys.readouterr().out
        event = view("u1", "p6")
        _wait(lambda: (latest("u1") or {}).get("trigger_event_id") == event, group, "a list without it")
        assert all(i["reason"]["kind"] != "pinned" for i in latest("u1")["items"])
    finally:
        group.stop()


def test_invalid_rules_are_refused_before_anything_is_sent(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")  # never reached
    bad = tmp_path / "rules.json"
    bad.write_text('[{"rule_id": "ok", "action": "block", "match": {"item_id": "p1"}},'
                   ' {"rule_id": "r9", "action": "boost", "match": {"category": "x"}, "factor": -1}]')
    with pytest.raises(SystemExit) as err:
        main(["rules", "add", str(bad)])
    assert "rule 2 ('r9') is not valid: factor:out_of_range" in str(err.value)
    assert "nothing was sent" in str(err.value)
    assert main(["rules", "add", "no-such-file.json"]) == 2
    assert "no file 'no-such-file.json'" in capsys.readouterr().err


def test_rule_files_may_hold_one_object_a_list_or_json_lines():
    one = '{"rule_id": "a", "action": "delete"}'
    assert load_records(one) == [{"rule_id": "a", "action": "delete"}]
    assert len(load_records(f"[{one}, {one}]")) == 2
    assert len(load_records(f"{one}\n\n{one}\n")) == 2
