"""Redis over TLS (``rediss://``): the sink and the running worker verify the server's
certificate with the CA named in ``REDIS_URL`` and write through the encrypted link.

The embedded Redis is built without TLS, so the test puts a TLS terminator in front of
it (Python's ``ssl`` on a free loopback port, forwarding to Redis), with a CA and a
server certificate made for the test (``cryptography``, installed with the dev extra).
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
import threading
import uuid

import orjson
import pytest
import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from connectors.embedded import ensure_topics, free_port
from connectors.redis_sink import RedisSink
from connectors.worker import WorkerGroup
from operators.messages import RecUpdate
from tests.livekit import produce, wait_for, worker_env

pytestmark = pytest.mark.integration


def _certificates(tmp_path) -> tuple[str, str, str]:
    """(ca.pem, server.pem, server.key) for 127.0.0.1, valid for a day."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "streamrec test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = [tmp_path / n for n in ("ca.pem", "server.pem", "server.key")]
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return tuple(str(p) for p in paths)


class TLSTerminator(threading.Thread):
    """Accepts TLS on a free loopback port and relays the plain bytes to ``target``."""

    def __init__(self, target_port: int, cert: str, key: str) -> None:
        super().__init__(daemon=True)
        self.port = free_port()
        self.target_port = target_port
        self.ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ctx.load_cert_chain(cert, key)
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.handshakes = 0

    async def _pipe(self, reader, writer) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def _client(self, reader, writer) -> None:
        self.handshakes += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    def run(self) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(
            asyncio.start_server(self._client, "127.0.0.1", self.port, ssl=self.ctx))
        self.ready.set()
        try:
            self.loop.run_forever()
        finally:
            server.close()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)


@pytest.fixture
def tls_redis(redis_server, tmp_path):
    ca, cert, key = _certificates(tmp_path)
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
