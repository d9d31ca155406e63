"""The worker's operations endpoint: Prometheus metrics, liveness and readiness over HTTP.

``GET /metrics``  the default ``prometheus_client`` registry (``streamrec.metrics`` plus
                  process and Python metrics), Kafka consumer lag refreshed per scrape.
``GET /healthz``  200 while the process runs (liveness).
``GET /readyz``   200 when the flow has started, Redis answers and the events topic is
                  readable from Kafka (with ``STREAMREC_SOURCE=rabbitmq``: the events
                  queues exist); else 503. The JSON body says which check failed.

One server per worker process, in a daemon thread, on ``STREAMREC_METRICS_PORT`` plus
the Bytewax process id (``-i``), so several processes on one host do not collide.
"""

from __future__ import annotations

import argparse
import logging
import threading
import time
from typing import Callable, Mapping
from wsgiref.simple_server import WSGIRequestHandler, make_server

import orjson
import redis
from confluent_kafka import Consumer, KafkaException, TopicPartition
from prometheus_client import REGISTRY, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from connectors.kafka_io import read_positions
from streamrec.metrics import HEALTH, KAFKA_LAG, KAFKA_UP, REDIS_UP
from streamrec.settings import Settings

__all__ = ["OpsServer", "process_index", "start_ops_server"]

log = logging.getLogger(__name__)

_PROBE_TTL_S = 2.0  # probes are cached this long: a scrape storm does not hit Kafka/Redis


def process_index(argv: list[str], environ: Mapping[str, str]) -> int:
    """This worker's Bytewax process id, read the way ``bytewax.run`` reads it.

    >>> process_index(["run.py", "dataflows.recommend", "-i", "2", "-a", "x"], {})
    2
    >>> process_index(["run.py", "dataflows.recommend"], {"BYTEWAX_PROCESS_ID": "1"})
    1
    >>> process_index(["run.py"], {"BYTEWAX_POD_NAME": "rec-3", "BYTEWAX_STATEFULSET_NAME": "rec"})
    3
    >>> process_index(["run.py", "dataflows.recommend", "-w", "2"], {})
    0
    """
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("-i", "--process-id", type=int, default=None)
    try:
        args, _ = parser.parse_known_args(argv[1:])
        if args.process_id is not None:
            return args.process_id
    except SystemExit:
        pass
    if environ.get("BYTEWAX_PROCESS_ID"):
        return int(environ["BYTEWAX_PROCESS_ID"])
    pod, sts = environ.get("BYTEWAX_POD_NAME"), environ.get("BYTEWAX_STATEFULSET_NAME")
    if pod and sts and pod.startswith(sts + "-"):
        return int(pod[len(sts) + 1:])
    return 0


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args) -> None:  # noqa: A002 - stdlib signature
        pass  # scrapes every few seconds would drown the worker log


class _Probe:
    """A check that runs at most once per ``_PROBE_TTL_S``; returns (ok, detail)."""

    def __init__(self, check: Callable[[], str]) -> None:
        self.check = check
        self._lock = threading.Lock()
        self._at = 0.0
        self._result: tuple[bool, str] = (False, "not probed yet")

    def __call__(self) -> tuple[bool, str]:
        with self._lock:
            if time.monotonic() - self._at >= _PROBE_TTL_S:
                try:
                    self._result = (True, self.check())
                except Exception as ex:  # noqa: BLE001 - any failure means "not ready"
                    self._result = (False, f"{type(ex).__name__}: {str(ex)[:200]}")
                self._at = time.monotonic()
            return self._result


class OpsServer:
    """The HTTP endpoint of one worker process (see the module docstring)."""

    def __init__(self, settings: Settings, host: str, port: int) -> None:
        self.settings = settings
        self.host = host
        self.port = port
        self._metrics_app = make_wsgi_app(REGISTRY)
        self._redis = redis.Redis.from_url(settings.redis_url, socket_timeout=2.0,
                                           socket_connect_timeout=2.0)
        self._kafka: Consumer | None = None
        self._kafka_lock = threading.Lock()
        self.redis_probe = _Probe(self._check_redis)
        self.kafka_probe = _Probe(self._check_kafka)
        self.rabbitmq_probe = _Probe(self._check_rabbitmq)
        self._server = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # -- checks
    def _check_redis(self) -> str:
        ok = bool(self._redis.ping())
        REDIS_UP.set(1 if ok and HEALTH.redis_outage_since is None else 0)
        return "PONG"

    def _consumer(self) -> Consumer:
        if self._kafka is None:
            cfg = {**self.settings.kafka_config,
                   "bootstrap.servers": self.settings.kafka_bootstrap_servers,
                   "group.id": "streamrec-ops-probe", "enable.auto.commit": "false",
                   "socket.timeout.ms": "2000"}
            self._kafka = Consumer(cfg)
        return self._kafka

    def _check_kafka(self) -> str:
        with self._kafka_lock:
            try:
                consumer = self._consumer()
                topic = self.settings.events_topic
                meta = consumer.list_topics(topic, timeout=2.0).topics.get(topic)
                if meta is None or meta.error is not None:
                    err = meta.error if meta is not None else "missing"
                    msg = f"events topic {topic!r} is not readable ({err}); create it or fix STREAMREC_EVENTS_TOPIC"
                    raise KafkaException(msg)
                for (t, partition), next_offset in read_positions().items():
                    _, high = consumer.get_watermark_offsets(TopicPartition(t, partition),
                                                             timeout=2.0, cached=False)
                    KAFKA_LAG.labels(topic=t, partition=str(partition)).set(max(0, high - next_offset))
            except Exception:
                KAFKA_UP.set(0)
                raise
        KAFKA_UP.set(1)
        return f"{len(meta.partitions)} partitions in {topic!r}"

    def _check_rabbitmq(self) -> str:
        from connectors.rabbitmq_io import queue_depths

        depths = queue_depths(self.settings.rabbitmq_url, self.settings.rabbitmq_events_queues,
                              timeout=2.0)
        return ", ".join(f"{queue!r}: {ready} ready" for queue, ready in depths.items())

    def readiness(self) -> tuple[bool, dict]:
        started = HEALTH.sinks_built > 0
        redis_ok, redis_detail = self.redis_probe()
        if HEALTH.redis_outage_since is not None:
            redis_ok = False
            redis_detail = (f"writes failing for {time.monotonic() - HEALTH.redis_outage_since:.0f}s"
                            f" (probe: {redis_detail})")
        source = self.settings.source
        source_ok, source_detail = (self.rabbitmq_probe if source == "rabbitmq"
                                    else self.kafka_probe)()
        last = HEALTH.last_batch_at
        body = {
            "ready": started and redis_ok and source_ok,
            "checks": {
                "flow": {"ok": started, "detail": "running" if started else "starting"},
                "redis": {"ok": redis_ok, "detail": redis_detail},
                source: {"ok": source_ok, "detail": source_detail},
            },
            "last_batch_age_s": round(time.time() - last, 3) if last else None,
        }
        return body["ready"], body

    # -- HTTP
    def app(self, environ, start_response):
        path = environ.get("PATH_INFO", "/")
        if path == "/metrics":
            if self.settings.source == "kafka":
                self.kafka_probe()  # refreshes the lag gauges, at most once per TTL
            return self._metrics_app(environ, start_response)
        if path == "/healthz":
            return self._json(start_response, "200 OK", {"alive": True})
        if path == "/readyz":
            ready, body = self.readiness()
            return self._json(start_response, "200 OK" if ready else "503 Service Unavailable", body)
        return self._json(start_response, "404 Not Found",
                          {"error": "not found", "paths": ["/metrics", "/healthz", "/readyz"]})

    @staticmethod
    def _json(start_response, status: str, body: dict):
        data = orjson.dumps(body)
        start_response(status, [("Content-Type", "application/json"),
                                ("Content-Length", str(len(data)))])
        return [data]

    def start(self) -> "OpsServer":
        self._server = make_server(self.host, self.port, self.app, ThreadingWSGIServer,
                                   handler_class=_QuietHandler)
        self.port = self._server.server_port
        self._thread = threading.Thread(target=self._server.serve_forever, name="streamrec-ops",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        self._redis.close()
        if self._kafka is not None:
            self._kafka.close()
            self._kafka = None


def start_ops_server(settings: Settings, argv: list[str], environ: Mapping[str, str]) -> OpsServer | None:
    """Start the endpoint unless ``STREAMREC_METRICS_PORT=0``; never stops the worker."""
    if settings.metrics_port == 0:
        log.info("metrics endpoint off (STREAMREC_METRICS_PORT=0)")
        return None
    index = process_index(argv, environ)
    port = settings.metrics_port + index
    try:
        server = OpsServer(settings, settings.metrics_host, port).start()
    except OSError as ex:
        # Serving recommendations matters more than serving metrics: say so and go on.
        log.error("metrics endpoint could not listen on %s:%d (%s); the worker runs without "
                  "/metrics and /readyz. Set STREAMREC_METRICS_PORT to a free base port "
                  "(each process adds its -i id) or 0 to turn the endpoint off",
                  settings.metrics_host, port, ex)
        return None
    log.info("metrics on %s/metrics, readiness on %s/readyz", server.url, server.url)
    return server
