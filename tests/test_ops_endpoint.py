"""The worker's /metrics, /healthz and /readyz, read over HTTP from a real worker
(embedded broker and Redis) after it processed known traffic."""

from __future__ import annotations

import collections
import time
import uuid

import httpx
import orjson
import pytest
from confluent_kafka import Producer
from prometheus_client.parser import text_string_to_metric_families

from connectors.embedded import ensure_topics
from workloads.traffic import TrafficConfig, generate_catalog, generate_events
from connectors.worker import WorkerGroup

pytestmark = pytest.mark.integration

BAD = [
    (b"not json", "payload:not_json"),
    (b'{"event_id": "b1", "ts": 1732680000, "user_id": "x", "type": "teleport", "item_id": "p"}',
     "type:unknown"),
    (b'{"event_id": "b2", "ts": "last tuesday", "user_id": "x", "type": "view", "item_id": "p"}',
     "ts:bad_iso8601"),
    (b'{"ts": 1732680000, "user_id": "x", "type": "view", "item_id": "p"}', "event_id:missing"),
    (b"also not json", "payload:not_json"),
]


def produce(bootstrap: str, topic: str, messages) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for key, value in messages:
        producer.produce(topic, key=key, value=value)
        producer.poll(0)
    assert producer.flush(30) == 0


def scrape(url: str) -> dict[str, list]:
    """Samples by metric name: {name: [(labels, value), ...]}."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    out: dict[str, list] = collections.defaultdict(list)
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[s.name].append((s.labels, s.value))
    return out


def by_label(samples: list, label: str) -> dict[str, float]:
    return {labels[label]: value for labels, value in samples}


def test_metrics_count_what_was_sent_and_the_worker_is_ready(
    kafka, redis_server, redis_client, unique_topic, tmp_path
):
    topic, prefix = unique_topic, f"op{uuid.uuid4().hex[:6]}"
    ensure_topics(kafka.bootstrap, {topic: 2, f"{topic}-items": 1, f"{topic}.dlq": 1})
    cfg = TrafficConfig(n_users=30, n_items=150, n_categories=5, seed=3,
                        start_ts=time.time() - 10 * 86400)
    catalog, events = generate_catalog(cfg), list(generate_events(cfg, 400))
    produce(kafka.bootstrap, f"{topic}-items", [(i["item_id"].encode(), orjson.dumps(i)) for i in catalog])
    messages = [(e["user_id"].encode(), orjson.dumps(e)) for e in events]
    messages += [(b"bad", payload) for payload, _ in BAD]
    produce(kafka.bootstrap, topic, messages)

    env = {"KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap, "REDIS_URL": redis_server.url,
           "STREAMREC_EVENTS_TOPIC": topic, "STREAMREC_ITEMS_TOPIC": f"{topic}-items",
           "STREAMREC_PREFIX": prefix}
    group = WorkerGroup(env, log_dir=tmp_path / "logs").start()
    (url,) = group.metrics_urls
    sent_types = collections.Counter(e["type"] for e in events)
    sent_reasons = collections.Counter(r for _, r in BAD)
    try:
        deadline = time.monotonic() + 90
        metrics: dict = {}
        while time.monotonic() < deadline:
            assert group.alive(), group.log_tail()
            try:
                metrics = scrape(url)
            except httpx.TransportError:
                metrics = {}  # not listening yet
            if (by_label(metrics.get("streamrec_events_total", []), "type") == sent_types
                    and by_label(metrics.get("streamrec_dead_letters_total", []), "reason")
                    == sent_reasons):
                break
            time.sleep(0.5)
        else:
            pytest.fail(f"metrics never matched what was sent: {dict(metrics)}\n{group.log_tail()}")

        assert httpx.get(f"{url}/healthz", timeout=10).json() == {"alive": True}
        ready = httpx.get(f"{url}/readyz", timeout=10)
        assert ready.status_code == 200, ready.text
        body = ready.json()
        assert body["ready"] and all(c["ok"] for c in body["checks"].values())
        assert body["last_batch_age_s"] is not None

        # Every update in the recs stream was counted, and each has a latency sample.
        metrics = scrape(url)
        written = metrics["streamrec_lists_written_total"][0][1]
        assert written == redis_client.xlen(f"{prefix}:recs") > 0
        assert metrics["streamrec_event_to_redis_seconds_count"][0][1] == written
        assert metrics["streamrec_event_to_redis_seconds_sum"][0][1] > 0
        assert metrics["streamrec_batch_size_sum"][0][1] >= written + len(BAD)
        assert metrics["streamrec_redis_up"][0][1] == 1
        # State sizes: every user with a profile in Redis is held in state (a user who
        # withdrew consent is held without one), and items and ranking state exist.
        keys = by_label(metrics["streamrec_state_keys"], "step")
        profiles = len(redis_client.keys(f"{prefix}:profile:*"))
        assert 0 < profiles <= keys["user"] <= cfg.n_users, (profiles, keys)
        assert 0 < keys["item"] <= cfg.n_items
        assert 0 < metrics["streamrec_rank_users"][0][1] <= keys["user"]
        assert metrics["streamrec_kafka_up"][0][1] == 1
        # Everything was read: the lag of every partition this process read is zero
        # (the gauge is refreshed by a probe cached for 2 s, so it may take a scrape more).
        deadline = time.monotonic() + 15
        while True:
            lag = {(labels["topic"], labels["partition"]): value
                   for labels, value in scrape(url).get("streamrec_kafka_consumer_lag", [])}
            if {(topic, "0"), (topic, "1"), (f"{topic}-items", "0")} <= set(lag):
                break
            assert time.monotonic() < deadline, f"lag gauges: {lag}"
            time.sleep(0.5)
        assert set(lag.values()) == {0.0}, lag
        assert httpx.get(f"{url}/nope", timeout=10).status_code == 404
    finally:
        group.stop()


def test_readiness_is_503_while_redis_is_unreachable(kafka, unique_topic, tmp_path):
    from connectors.embedded import free_port

    ensure_topics(kafka.bootstrap, {unique_topic: 1, f"{unique_topic}.dlq": 1})
    env = {"KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap,
           "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",  # nobody listens there
           "STREAMREC_EVENTS_TOPIC": unique_topic, "STREAMREC_CONSUME_ITEMS": "0"}
    group = WorkerGroup(env, log_dir=tmp_path / "logs").start()
    (url,) = group.metrics_urls
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                resp = httpx.get(f"{url}/readyz", timeout=10)
                break
            except httpx.TransportError:
                time.sleep(0.3)
        else:
            pytest.fail(f"the endpoint never listened\n{group.log_tail()}")
        assert resp.status_code == 503
        checks = resp.json()["checks"]
        assert not checks["redis"]["ok"] and "Connection" in checks["redis"]["detail"]
        assert checks["kafka"]["ok"], checks
    finally:
        group.stop()
