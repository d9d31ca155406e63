"""Redis over TLS (``rediss://``): the sink and the running worker verify the server's
certificate with the CA named in ``REDIS_URL`` and write through the encrypted link.

The embedded Redis is built without TLS, so the test puts a TLS terminator in front of
it (Python's ``ssl`` on a free loopback port, forwarding to Redis), with a CA and a
server certificate made for the test (``cryptography``, installed with the dev extra).
"""

from __future__ import annotations

import uuid

import orjson
import pytest
import redis

from connectors.embedded import ensure_topics
from connectors.redis_sink import RedisSink
from connectors.worker import WorkerGroup
from operators.messages import RecUpdate
from livekit import produce, wait_for, worker_env
from tlskit import TLSTerminator, certificates

pytestmark = pytest.mark.integration


@pytest.fixture
def tls_redis(redis_server, tmp_path):
    ca, cert, key = certificates(tmp_path)
    port = int(redis_server.url.rsplit(":", 1)[1].split("/")[0])
    proxy = TLSTerminator(port, cert, key)
    proxy.start()
    assert proxy.ready.wait(10)
    yield f"rediss://127.0.0.1:{proxy.port}/0?ssl_ca_certs={ca}", proxy, ca
    proxy.stop()


def test_sink_writes_over_tls_and_refuses_an_unknown_certificate(tls_redis, redis_client):
    url, proxy, _ = tls_redis
    prefix = f"tls{uuid.uuid4().hex[:6]}"
    rec = RecUpdate("u1", "u1", 1, "e1", 1.0, None, [("p1", 0.5)], "covis", "m", None, "r1")
    part = RedisSink(url, prefix).build("out", 0, 1)
    part.write_batch([rec])
    part.close()
    assert proxy.handshakes >= 1
    assert orjson.loads(redis_client.get(f"{prefix}:latest:u1"))["rec_id"] == "r1"
    # Without the CA the server's certificate is not trusted: the client says so.
    untrusted = redis.Redis.from_url(url.split("?")[0], socket_timeout=5)
    with pytest.raises(redis.ConnectionError, match="CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
        untrusted.ping()


def test_worker_runs_against_redis_over_tls(tls_redis, kafka, redis_client, unique_topic, tmp_path):
    url, proxy, _ = tls_redis
    topic, prefix = unique_topic, f"tlsw{uuid.uuid4().hex[:6]}"
    ensure_topics(kafka.bootstrap, {topic: 1, f"{topic}-items": 1, f"{topic}.dlq": 1})
    events = [{"event_id": f"t{i}", "ts": 1_732_680_000.0 + i, "user_id": f"u{i % 3}", "type": "view",
               "item_id": f"p{i % 7}", "category": "c"} for i in range(12)]
    group = WorkerGroup(worker_env(kafka.bootstrap, url, topic, prefix), log_dir=tmp_path / "logs").start()
    try:
        produce(kafka.bootstrap, topic, events)

        def done() -> bool:
            raw = redis_client.get(f"{prefix}:latest:u2")
            return raw is not None and orjson.loads(raw)["trigger_event_id"] == "t11"

        wait_for(done, group, timeout=60, what="a list written through TLS")
        assert proxy.handshakes >= 1
    finally:
        group.stop()
