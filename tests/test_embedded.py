"""The embedded broker and Redis are real servers: talk to them as production code would."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections import defaultdict
from pathlib import Path

import pytest
import redis
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

import bytewax.operators as op
from bytewax.connectors.kafka import KafkaSource
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSink, run_main
from connectors.embedded import (
    GROUP_CONFIG,
    RESERVED_PORTS,
    EmbeddedKafka,
    EmbeddedRedis,
    ensure_topics,
    free_port,
)
from streamrec.errors import ConfigError, EmbeddedServiceError

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]


def produce(bootstrap: str, topic: str, count: int, users: int = 37) -> list[tuple[bytes, bytes]]:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    sent = [(f"u{i % users}".encode(), f"{i}".encode()) for i in range(count)]
    for key, value in sent:
        producer.produce(topic, key=key, value=value)
    assert producer.flush(10) == 0, "messages left unsent"
    return sent


def partition_counts(bootstrap: str) -> dict[str, int]:
    metadata = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=5)
    return {name: len(topic.partitions) for name, topic in metadata.topics.items()}


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is dead for our purposes.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def accepts(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


# -- Kafka --------------------------------------------------------------------


def test_consumer_group_reads_every_keyed_message(kafka: EmbeddedKafka, unique_topic: str) -> None:
    ensure_topics(kafka.bootstrap, {unique_topic: 2})
    sent = produce(kafka.bootstrap, unique_topic, 500)

    consumer = Consumer({
        "bootstrap.servers": kafka.bootstrap, "group.id": f"g-{unique_topic}",
        "auto.offset.reset": "earliest", "enable.auto.commit": False,
        "fetch.wait.max.ms": 5, **GROUP_CONFIG,
    })
    consumer.subscribe([unique_topic])
    received, partitions_of_key = [], defaultdict(set)
    deadline = time.monotonic() + 20
    try:
        while len(received) < len(sent) and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            received.append((msg.key(), msg.value()))
            partitions_of_key[msg.key()].add(msg.partition())
        consumer.commit(asynchronous=False)
        committed = consumer.committed([TopicPartition(unique_topic, p) for p in (0, 1)], timeout=5)
    finally:
        consumer.close()

    assert sorted(received) == sorted(sent)
    # Keyed by user: each user's events live in one partition, in order.
    assert all(len(parts) == 1 for parts in partitions_of_key.values())
    assert {p for parts in partitions_of_key.values() for p in parts} == {0, 1}
    for key in partitions_of_key:
        values = [int(v) for k, v in received if k == key]
        assert values == sorted(values)
    assert sum(tp.offset for tp in committed) == len(sent)


def test_ensure_topics_is_idempotent(kafka: EmbeddedKafka, unique_topic: str) -> None:
    other = unique_topic + "-b"
    ensure_topics(kafka.bootstrap, {unique_topic: 2, other: 1})
    ensure_topics(kafka.bootstrap, {unique_topic: 2, other: 1})
    ensure_topics(kafka.bootstrap, {unique_topic: 1})  # more than asked for is fine
    counts = partition_counts(kafka.bootstrap)
    assert (counts[unique_topic], counts[other]) == (2, 1)


def test_ensure_topics_never_leaves_a_topic_short(kafka: EmbeddedKafka, unique_topic: str) -> None:
    ensure_topics(kafka.bootstrap, {unique_topic: 1})
    try:
        ensure_topics(kafka.bootstrap, {unique_topic: 3}, timeout=10)
    except ConfigError as ex:
        # tansu has no CreatePartitions; the error must say so and how to go on.
        assert "cannot add partitions" in str(ex) and unique_topic in str(ex)
    else:
        assert partition_counts(kafka.bootstrap)[unique_topic] == 3


@pytest.mark.parametrize("count", [0, -1, "2", 1.5])
def test_ensure_topics_rejects_bad_partition_counts(count: object) -> None:
    with pytest.raises(ConfigError, match="partition count"):
        ensure_topics("127.0.0.1:1", {"events": count})  # type: ignore[dict-item]


@pytest.mark.parametrize("name", ["", "has space", "a/b", "..", "x" * 250])
def test_ensure_topics_rejects_names_kafka_would_refuse(name: str) -> None:
    # tansu itself accepts any name; production Kafka would not.
    with pytest.raises(ConfigError, match="not a Kafka topic name"):
        ensure_topics("127.0.0.1:1", {name: 1})


def test_ensure_topics_names_an_unreachable_broker() -> None:
    bootstrap = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(ConfigError, match=bootstrap):
        ensure_topics(bootstrap, {"events": 1}, timeout=1)
    assert time.monotonic() - started < 10


def test_bytewax_kafka_source_reads_everything(kafka: EmbeddedKafka, unique_topic: str) -> None:
    ensure_topics(kafka.bootstrap, {unique_topic: 2})
    sent = produce(kafka.bootstrap, unique_topic, 300)

    out: list[tuple[bytes, bytes]] = []
    flow = Dataflow("embedded_kafka_read")
    messages = op.input("in", flow, KafkaSource(
        [kafka.bootstrap], [unique_topic], tail=False, add_config={"fetch.wait.max.ms": "5"},
    ))
    pairs = op.map("key_value", messages, lambda msg: (msg.key, msg.value))
    op.output("out", pairs, TestingSink(out))
    run_main(flow)

    assert sorted(out) == sorted(sent)


def test_two_brokers_run_side_by_side(kafka: EmbeddedKafka) -> None:
    with EmbeddedKafka() as first, EmbeddedKafka() as second:
        assert len({kafka.port, first.port, second.port}) == 3
        assert first.cluster_id != second.cluster_id
        ensure_topics(first.bootstrap, {"only-on-first": 1})
        ensure_topics(second.bootstrap, {"only-on-second": 1})
        assert "only-on-second" not in partition_counts(first.bootstrap)
        assert "only-on-first" not in partition_counts(second.bootstrap)
        assert "only-on-first" not in partition_counts(kafka.bootstrap)


def test_kafka_bootstrap_and_repr() -> None:
    broker = EmbeddedKafka(port=12345)
    assert broker.bootstrap == "127.0.0.1:12345"
    assert "stopped" in repr(broker)


# -- Redis --------------------------------------------------------------------


def test_redis_set_get_and_streams(redis_client: redis.Redis) -> None:
    assert redis_client.set("rec:latest:u1", b'[{"item_id": "p9"}]')
    assert redis_client.get("rec:latest:u1") == b'[{"item_id": "p9"}]'

    first = redis_client.xadd("rec:recs", {"user_id": "u1", "items": "[]"}, maxlen=1000)
    redis_client.xadd("rec:recs", {"user_id": "u2", "items": "[]"}, maxlen=1000)
    [(stream, entries)] = redis_client.xread({"rec:recs": "0-0"})
    assert stream == b"rec:recs"
    assert [fields[b"user_id"] for _, fields in entries] == [b"u1", b"u2"]
    assert entries[0][0] == first
    assert redis_client.xread({"rec:recs": entries[-1][0]}, block=10) == []


def test_redis_client_starts_on_an_empty_database(redis_client: redis.Redis) -> None:
    assert redis_client.dbsize() == 0
    redis_client.set("left-behind", b"1")  # the next test must not see it


def test_redis_url_points_at_the_server(redis_server: EmbeddedRedis) -> None:
    assert redis_server.url == f"redis://127.0.0.1:{redis_server.port}/0"
    assert redis.Redis.from_url(redis_server.url).ping()


# -- lifecycle and failures ---------------------------------------------------


def test_free_port_avoids_reserved_ports() -> None:
    ports = {free_port() for _ in range(20)}
    assert not ports & RESERVED_PORTS
    assert all(1024 <= port <= 65535 for port in ports)


@pytest.mark.parametrize("service_type", [EmbeddedKafka, EmbeddedRedis])
def test_stop_kills_the_process_and_is_idempotent(service_type: type) -> None:
    service = service_type().start()
    pid, port = service.pid, service.port
    assert pid_alive(pid) and accepts(port)
    service.stop()
    assert not pid_alive(pid)
    assert not accepts(port)
    assert not service.running
    service.stop()  # a second stop is a no-op


def test_context_manager_stops_on_error() -> None:
    with pytest.raises(KeyError), EmbeddedRedis() as server:
        pid = server.pid
        raise KeyError("boom")
    assert not pid_alive(pid)


def test_missing_binary_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-broker"
    with pytest.raises(EmbeddedServiceError, match="no-such-broker"):
        EmbeddedKafka(binary=missing).start()


def test_crashing_binary_reports_its_log(tmp_path: Path) -> None:
    script = tmp_path / "crashes"
    script.write_text("#!/bin/sh\necho 'fatal: disk on fire' >&2\nexit 3\n")
    script.chmod(0o755)
    with pytest.raises(EmbeddedServiceError) as info:
        EmbeddedRedis(binary=script).start()
    assert "code 3" in str(info.value)
    assert "disk on fire" in str(info.value)


@pytest.mark.parametrize("service_type", [EmbeddedKafka, EmbeddedRedis])
def test_occupied_port_is_reported(service_type: type) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        with pytest.raises(EmbeddedServiceError, match=f"{port} is already in use"):
            service_type(port=port).start()


def test_occupied_port_by_a_server_of_the_same_kind(redis_server: EmbeddedRedis) -> None:
    with pytest.raises(EmbeddedServiceError, match="already in use"):
        EmbeddedRedis(port=redis_server.port).start()
    assert redis.Redis.from_url(redis_server.url).ping()  # the owner is unharmed


@pytest.mark.parametrize("ending", ["exit", "sigkill"])
def test_no_orphan_survives_the_parent(ending: str) -> None:
    # A child Python starts both services, reports their pids, waits for our
    # word, then either exits normally (atexit) or is killed outright
    # (parent-death signal).
    code = textwrap.dedent("""
        import sys
        from connectors.embedded import EmbeddedKafka, EmbeddedRedis
        kafka, server = EmbeddedKafka().start(), EmbeddedRedis().start()
        print(kafka.pid, server.pid, flush=True)
        sys.stdin.readline()
    """)
    child = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, text=True,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        pids = [int(pid) for pid in child.stdout.readline().split()]
        assert len(pids) == 2 and all(pid_alive(pid) for pid in pids)
        if ending == "sigkill":
            child.send_signal(signal.SIGKILL)
        else:
            child.stdin.write("exit\n")
            child.stdin.flush()
        child.wait(timeout=20)
    finally:
        child.kill()
        child.stdin.close()
        child.stdout.close()
    deadline = time.monotonic() + 10
    while any(pid_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    survivors = [pid for pid in pids if pid_alive(pid)]
    for pid in survivors:  # leave nothing running even when the test fails
        os.kill(pid, signal.SIGKILL)
    assert not survivors
