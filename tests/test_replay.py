"""Replay into a real Kafka-protocol broker (the session's embedded tansu) and read it back."""

from __future__ import annotations

import collections
import logging
import threading
import time

import orjson
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from connectors.embedded import free_port
from connectors.replay import PRODUCED_AT_HEADER, produce_catalog, produce_events, produce_raw
from workloads.traffic import TrafficConfig, generate_catalog, generate_events

pytestmark = pytest.mark.integration

CFG = TrafficConfig(n_users=50, n_items=300, n_categories=6, start_ts=1_732_680_000.0)
PARTITIONS = 3


def create_topic(bootstrap: str, topic: str, partitions: int = PARTITIONS) -> str:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(topic, partitions, 1)]).values():
        future.result(timeout=10)
    return topic


def consume_all(bootstrap: str, topic: str, expected: int, timeout: float = 20.0) -> list:
    """Every message of ``topic`` (all partitions, from the beginning), up to ``expected``."""
    consumer = Consumer({
        "bootstrap.servers": bootstrap, "group.id": f"reader-{topic}", "enable.auto.commit": False,
        "fetch.wait.max.ms": 10,
    })
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
    messages = []
    deadline = time.monotonic() + timeout
    try:
        while len(messages) < expected and time.monotonic() < deadline:
            for msg in consumer.consume(1000, timeout=0.2):
                assert msg.error() is None, msg.error()
                messages.append(msg)
    finally:
        consumer.close()
    return messages


@pytest.fixture
def topic(kafka, unique_topic: str) -> str:
    return create_topic(kafka.bootstrap, unique_topic)


def test_events_are_keyed_by_user_and_stamped_with_produce_time(kafka, topic: str) -> None:
    events = list(generate_events(CFG, 3000))
    before = time.time()
    assert produce_events(kafka.bootstrap, topic, events) == len(events)
    after = time.time()
    messages = consume_all(kafka.bootstrap, topic, len(events))
    assert len(messages) == len(events)
    partitions = collections.defaultdict(set)
    per_partition = collections.defaultdict(list)
    for msg in messages:
        event = orjson.loads(msg.value())
        assert msg.key() == event["user_id"].encode()
        headers = dict(msg.headers())
        produced_at = float(headers[PRODUCED_AT_HEADER].decode("ascii"))
        assert before <= produced_at <= after
        partitions[event["user_id"]].add(msg.partition())
        per_partition[msg.partition()].append(event)
    assert sorted(orjson.loads(m.value())["event_id"] for m in messages) == sorted(e["event_id"] for e in events)
    # One user's events share a partition, so their order survives.
    assert all(len(p) == 1 for p in partitions.values())
    assert len(per_partition) == PARTITIONS
    for stream in per_partition.values():
        assert [e["ts"] for e in stream] == sorted(e["ts"] for e in stream)


def test_stamping_can_be_turned_off(kafka, topic: str) -> None:
    events = list(generate_events(CFG, 20))
    assert produce_events(kafka.bootstrap, topic, events, stamp_produce_time=False) == 20
    assert all(not m.headers() for m in consume_all(kafka.bootstrap, topic, 20))


def test_rate_pacing_holds(kafka, topic: str) -> None:
    events = list(generate_events(CFG, 2000))
    reports: list[int] = []
    started = time.perf_counter()
    sent = produce_events(kafka.bootstrap, topic, events, rate=1000.0, on_progress=reports.append)
    elapsed = time.perf_counter() - started
    assert sent == 2000
    assert 1.6 <= elapsed <= 3.0, f"2000 events at 1000/s took {elapsed:.2f}s"
    assert reports == sorted(reports) and reports[-1] == 2000 and len(reports) >= 10
    # Send times are spread evenly, not bunched at the start or the end.
    stamps = sorted(float(dict(m.headers())[PRODUCED_AT_HEADER]) for m in consume_all(kafka.bootstrap, topic, 2000))
    first_half = stamps[999] - stamps[0]
    assert 0.7 <= first_half <= 1.3


def test_stop_ends_a_replay_early_and_flushes_what_was_sent(kafka, topic: str) -> None:
    stop = threading.Event()
    timer = threading.Timer(0.5, stop.set)
    timer.start()
    try:
        sent = produce_events(kafka.bootstrap, topic, generate_events(CFG, 100_000), rate=2000.0, stop=stop)
    finally:
        timer.cancel()
    assert 500 <= sent <= 2000
    assert len(consume_all(kafka.bootstrap, topic, sent + 1, timeout=1.5)) == sent


def test_progress_bar_goes_to_stderr(kafka, topic: str, capsys: pytest.CaptureFixture) -> None:
    assert produce_events(kafka.bootstrap, topic, list(generate_events(CFG, 500)), progress=True) == 500
    captured = capsys.readouterr()
    assert "500/500" in captured.err and captured.out == ""


def test_catalog_items_are_keyed_by_item_id(kafka, topic: str) -> None:
    items = generate_catalog(CFG)
    assert produce_catalog(kafka.bootstrap, topic, items) == len(items)
    messages = consume_all(kafka.bootstrap, topic, len(items))
    got = {m.key().decode(): orjson.loads(m.value()) for m in messages}
    assert got == {item["item_id"]: item for item in items}


def test_raw_payloads_arrive_byte_for_byte(kafka, topic: str) -> None:
    payloads = [(b"u1", b"{not json"), (None, b"\xff\xfe"), (b"u2", b""), (b"u1", b'{"event_id": 1}')]
    assert produce_raw(kafka.bootstrap, topic, payloads) == len(payloads)
    messages = consume_all(kafka.bootstrap, topic, len(payloads))
    # A zero-length value may come back as None; a missing key stays missing.
    assert sorted((m.key() or b"-", m.value() or b"") for m in messages) == sorted((k or b"-", v) for k, v in payloads)
    assert sum(m.key() is None for m in messages) == 1


def test_delivery_failures_are_counted_and_reported(caplog: pytest.LogCaptureFixture) -> None:
    nobody = f"127.0.0.1:{free_port()}"
    events = list(generate_events(CFG, 10))
    with caplog.at_level(logging.WARNING, logger="connectors.replay"):
        sent = produce_events(nobody, "events", events, config={"message.timeout.ms": 1000, "log_level": 0})
    assert sent == 0
    assert "10 of 10 messages not delivered" in caplog.text


def test_bad_rate_is_rejected() -> None:
    with pytest.raises(ValueError, match="rate"):
        produce_events("127.0.0.1:1", "events", [], rate=0)


def test_producers_get_the_kafka_settings_without_consumer_only_properties(capfd):
    # KAFKA_* settings reach every client; a producer warns (CONFWARN) about each
    # consumer-only property it is given, at every start.
    from connectors.replay import _Delivery, _producer

    settings = {"fetch.wait.max.ms": "5", "queued.max.messages.kbytes": "2048",
                "client.id": "streamrec-test"}
    producer = _producer("127.0.0.1:1", 5, settings, _Delivery())
    producer.flush(0.2)
    del producer
    err = capfd.readouterr().err
    assert "CONFWARN" not in err
