"""Kafka over TLS: the worker's ``KAFKA_*`` settings reach librdkafka as they are, its
Kafka clients verify the broker's certificate with the CA named by
``KAFKA_SSL_CA_LOCATION``, and events flow through the encrypted link (the worker has no
other way to the broker: it is only told the terminator's port).

The embedded broker speaks no TLS, so a TLS terminator stands in front of it and the
broker advertises the terminator's port: after bootstrap, clients reach the broker only
through it.
"""

from __future__ import annotations

import uuid

import orjson
import pytest
from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient

from connectors.embedded import EmbeddedKafka, ensure_topics, free_port
from connectors.worker import WorkerGroup
from livekit import wait_for, worker_env
from tlskit import TLSTerminator, certificates

pytestmark = pytest.mark.integration


def test_worker_reads_events_over_tls_and_a_client_without_the_ca_is_refused(
        redis_server, redis_client, tmp_path):
    ca, cert, key = certificates(tmp_path)
    broker_port = free_port()
    proxy = TLSTerminator(broker_port, cert, key)
    proxy.start()
    assert proxy.ready.wait(10)
    broker = EmbeddedKafka(port=broker_port, advertised_port=proxy.port,
                           log_dir=tmp_path / "kafka").start()
    group = None
    try:
        bootstrap = f"127.0.0.1:{proxy.port}"
        tls = {"security.protocol": "SSL", "ssl.ca.location": ca}
        topic, prefix = "events", f"ktls{uuid.uuid4().hex[:6]}"
        ensure_topics(bootstrap, {topic: 1, f"{topic}-items": 1, f"{topic}.dlq": 1}, config=tls)
        env = worker_env(bootstrap, redis_server.url, topic, prefix,
                         KAFKA_SECURITY_PROTOCOL="SSL", KAFKA_SSL_CA_LOCATION=ca)
        before = proxy.handshakes  # the test's own admin client
        group = WorkerGroup(env, log_dir=tmp_path / "logs").start()
        producer = Producer({"bootstrap.servers": bootstrap, **tls})
        for i in range(12):
            event = {"event_id": f"t{i}", "ts": 1_732_680_000.0 + i, "user_id": f"u{i % 3}",
                     "type": "view", "item_id": f"p{i % 7}", "category": "c"}
            producer.produce(topic, key=event["user_id"].encode(), value=orjson.dumps(event))
        assert producer.flush(30) == 0

        def done() -> bool:
            raw = redis_client.get(f"{prefix}:latest:u2")
            return raw is not None and orjson.loads(raw)["trigger_event_id"] == "t11"

        after_producer = proxy.handshakes
        wait_for(done, group, timeout=60, what="a list from events read over TLS")
        assert after_producer > before  # the producer went through the terminator
        assert group.alive()

        # A client that does not trust the test CA cannot talk to the broker.
        untrusted = AdminClient({"bootstrap.servers": bootstrap, "security.protocol": "SSL",
                                 "socket.timeout.ms": 3000, "log_level": 0})
        with pytest.raises(KafkaException):
            untrusted.list_topics(timeout=5)
    finally:
        if group is not None:
            group.stop()
        broker.stop()
        proxy.stop()
