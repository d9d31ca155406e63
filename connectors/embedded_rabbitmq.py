"""A private RabbitMQ node for the test suite and local runs, root or not.

``EmbeddedRabbitMQ`` runs Debian's ``rabbitmq-server`` (``apt-get install
rabbitmq-server``) as a child process with everything of its own: AMQP port,
Erlang distribution port and port mapper (``epmd``) on free loopback ports, node
name ``streamrec-test-<port>@localhost``, and data, logs, config, plugins list and
Erlang cookie in a temporary directory. It never touches a system RabbitMQ that
may run on the same machine (port 5672, epmd on 4369, ``/var/lib/rabbitmq``).

Things worth knowing (Debian's 3.10 package, measured):

- ``/usr/sbin/rabbitmq-server`` is a wrapper that switches to the ``rabbitmq``
  user and drops the environment; the real script is
  ``/usr/lib/rabbitmq/bin/rabbitmq-server``, used here.
- ``/etc/rabbitmq/rabbitmq-env.conf`` may set ``NODENAME``; an empty env file of
  our own (``RABBITMQ_CONF_ENV_FILE``) keeps it out.
- Erlang starts a shared ``epmd -daemon`` that outlives the node unless one is
  already listening on ``ERL_EPMD_PORT``: so the node gets an ``epmd`` of its own,
  a child process stopped with it.
- Start-up takes about 5 s on two cores: start one node per test session.

Only the ``rabbitmq_consistent_hash_exchange`` plugin is enabled (no management
plugin, no extra listeners).

>>> import pika
>>> with EmbeddedRabbitMQ() as node:
...     pika.BlockingConnection(pika.URLParameters(node.url)).close()
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import signal
import subprocess
from pathlib import Path

from connectors.service_process import _EmbeddedService, _parent_death_signal, _signal_group, free_port
from streamrec.errors import EmbeddedServiceError

__all__ = ["EmbeddedRabbitMQ", "epmd_binary", "rabbitmq_server_binary"]

_INSTALL_HINT = "apt-get install -y rabbitmq-server (Debian/Ubuntu)"
# Debian's real start script first, then other layouts; never the su wrapper.
_SERVER_CANDIDATES = (
    "/usr/lib/rabbitmq/bin/rabbitmq-server",
    "/usr/lib/rabbitmq/lib/rabbitmq_server-*/sbin/rabbitmq-server",
)
_PLUGINS = ("rabbitmq_consistent_hash_exchange",)


def rabbitmq_server_binary() -> str:
    """Path of the ``rabbitmq-server`` start script (``STREAMREC_RABBITMQ_SERVER`` overrides)."""
    override = os.environ.get("STREAMREC_RABBITMQ_SERVER")
    if override:
        return override
    for pattern in _SERVER_CANDIDATES:
        found = sorted(glob.glob(pattern))
        if found:
            return found[-1]
    msg = f"no rabbitmq-server found under /usr/lib/rabbitmq; install it: {_INSTALL_HINT}"
    raise EmbeddedServiceError(msg)


def epmd_binary() -> str:
    """Path of Erlang's port mapper daemon, installed with rabbitmq-server."""
    found = shutil.which("epmd") or next(iter(sorted(glob.glob("/usr/lib/erlang/erts-*/bin/epmd"))), None)
    if not found:
        msg = f"no epmd (Erlang) found; install it with {_INSTALL_HINT}"
        raise EmbeddedServiceError(msg)
    return found


class EmbeddedRabbitMQ(_EmbeddedService):
    """A RabbitMQ node of our own on free loopback ports; ``.url`` to connect (guest)."""

    kind = "rabbitmq"

    def __init__(self, port: int | None = None, host: str = "127.0.0.1",
                 log_dir: str | Path | None = None, *, binary: str | Path | None = None) -> None:
        super().__init__(port, host, log_dir, binary=binary)
        # Told apart from any other node on the port by this name, which the server
        # announces in every connection's properties.
        self.cluster_name = f"streamrec-{secrets.token_hex(6)}"
        self.dist_port = 0
        self.epmd_port = 0
        self._epmd: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@{self.host}:{self.port}/%2F"

    @property
    def node_name(self) -> str:
        return f"streamrec-test-{self.port}@localhost"

    def _default_binary(self) -> str:
        return rabbitmq_server_binary()

    def _command(self, binary: str) -> list[str]:
        return [binary]

    def _env(self) -> dict[str, str]:
        assert self._workdir is not None
        home = self._workdir / f"node-{self.port}"
        home.mkdir(parents=True, exist_ok=True)
        config = home / "rabbitmq.conf"
        config.write_text(
            f"listeners.tcp.1 = {self.host}:{self.port}\n"
            f"cluster_name = {self.cluster_name}\n"
            # A full disk elsewhere on a shared machine must not block publishers here.
            "disk_free_limit.absolute = 10MB\n"
        )
        plugins = home / "enabled_plugins"
        plugins.write_text(f"[{','.join(_PLUGINS)}].\n")
        env_file = home / "rabbitmq-env.conf"
        env_file.write_text("")
        # Nothing RabbitMQ or Erlang reads from a stray environment (another node's
        # name, a system config) may leak in.
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("RABBITMQ_", "ERL_"))}
        env.update({
            "HOME": str(home),  # the Erlang cookie is written here
            "ERL_EPMD_PORT": str(self.epmd_port),
            "ERL_EPMD_ADDRESS": self.host,
            "RABBITMQ_NODE_IP_ADDRESS": self.host,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_NODENAME": self.node_name,
            "RABBITMQ_MNESIA_BASE": str(home / "mnesia"),
            "RABBITMQ_LOG_BASE": str(home / "log"),
            "RABBITMQ_LOGS": "-",  # to stdout, which is our log file
            "RABBITMQ_CONFIG_FILE": str(config),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(home / "advanced.config"),
            "RABBITMQ_CONF_ENV_FILE": str(env_file),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(plugins),
            "RABBITMQ_PLUGINS_EXPAND_DIR": str(home / "plugins-expand"),
            "RABBITMQ_PID_FILE": str(home / "rabbitmq.pid"),
            # The distribution port listens on loopback only.
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        })
        return env

    def _spawn_and_wait(self, binary: str) -> None:
        self.dist_port = free_port(self.host)
        self.epmd_port = free_port(self.host)
        self._start_epmd()
        try:
            super()._spawn_and_wait(binary)
        except BaseException:
            self._stop_epmd()
            raise

    def _start_epmd(self) -> None:
        assert self._workdir is not None
        log = open(self._workdir / f"epmd-{self.epmd_port}.log", "wb")
        try:
            self._epmd = subprocess.Popen(
                [epmd_binary(), "-port", str(self.epmd_port), "-address", self.host],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=_parent_death_signal(),  # noqa: PLW1509
            )
        except OSError as ex:
            msg = f"rabbitmq: could not run epmd: {ex}"
            raise EmbeddedServiceError(msg) from ex
        finally:
            log.close()

    def _stop_epmd(self) -> None:
        proc, self._epmd = self._epmd, None
        if proc is not None and proc.poll() is None:
            _signal_group(proc, signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.wait()

    def stop(self, *, cleanup: bool = True) -> None:
        """Stop the node (SIGTERM: a clean shutdown), then its epmd; idempotent."""
        super().stop(cleanup=False)
        self._stop_epmd()
        if cleanup:
            self._cleanup_workdir()

    def _probe(self, timeout: float) -> None:
        import pika

        params = pika.URLParameters(self.url)
        params.socket_timeout = timeout
        params.blocked_connection_timeout = timeout
        params.connection_attempts = 1
        connection = pika.BlockingConnection(params)
        try:
            name = connection._impl.server_properties.get("cluster_name")
        finally:
            connection.close()
        if isinstance(name, bytes):
            name = name.decode()
        if name != self.cluster_name:
            msg = f"port {self.port} answered as RabbitMQ cluster {name!r}, not ours"
            raise EmbeddedServiceError(msg)
