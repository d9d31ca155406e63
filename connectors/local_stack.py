"""The whole pipeline on one machine: the one place that starts it.

A :class:`LocalStack` runs the Kafka-protocol broker and Redis (embedded ones on free
ports, or the ones given), creates the topics, sends a catalog and events, starts the real
worker (``python -m bytewax.run dataflows.recommend``) and waits until it answers, and
serves the gateway in a thread. ``streamrec demo``, the browser test, the benchmarks and
the gateway tools all start the pipeline through it; ``stop()`` (or leaving the ``with``
block) ends exactly what it started, in reverse order.

:func:`shop_stack` is the ready-made recipe of the browser test and the click benchmark:
a generated shop catalog, some warm-up traffic, the worker and the gateway.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import redis

from connectors.embedded import EmbeddedKafka, EmbeddedRedis, ensure_topics
from connectors.redis_sink import RedisKeys
from connectors.worker import WorkerGroup
from streamrec.errors import StreamrecError

__all__ = ["LocalStack", "StackOptions", "shop_stack"]


@dataclass(frozen=True)
class StackOptions:
    """Names and sizes of one local pipeline; ``worker_env`` adds worker settings."""

    events_topic: str = "events"
    items_topic: str = "items"
    prefix: str = "streamrec"
    processes: int = 1  # worker processes; 0: services only, no topics
    events_partitions: int | None = None  # default: one per worker process
    worker_env: Mapping[str, str] = field(default_factory=dict)
    start_timeout: float = 90.0


class LocalStack:
    """Broker, Redis, topics, worker processes and gateway, started step by step.

    ``bootstrap`` and ``redis_url`` use running services instead of embedded ones.
    """

    def __init__(self, work_dir: str | Path, options: StackOptions = StackOptions(), *,
                 bootstrap: str | None = None, redis_url: str | None = None) -> None:
        # Absolute: the broker and Redis run in directories of their own.
        self.work_dir = Path(work_dir).resolve()
        self.options = options
        self.bootstrap, self.redis_url = bootstrap, redis_url
        self.keys = RedisKeys(options.prefix)
        self.workers: WorkerGroup | None = None
        self.gateway = None
        self.redis: redis.Redis | None = None
        self._services: list = []

    @property
    def env(self) -> dict[str, str]:
        """The worker's environment (also the gateway's): where to read and write."""
        o = self.options
        return {"KAFKA_BOOTSTRAP_SERVERS": self.bootstrap, "REDIS_URL": self.redis_url,
                "STREAMREC_EVENTS_TOPIC": o.events_topic, "STREAMREC_ITEMS_TOPIC": o.items_topic,
                "STREAMREC_PREFIX": o.prefix, **o.worker_env}

    def start_services(self) -> "LocalStack":
        """Start the embedded broker and Redis that were not given; create the topics
        (unless ``processes`` is 0: then only the services)."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        try:
            if self.bootstrap is None:
                kafka = EmbeddedKafka(log_dir=self.work_dir).start()
                self._services.append(kafka)
                self.bootstrap = kafka.bootstrap
            if self.redis_url is None:
                store = EmbeddedRedis(log_dir=self.work_dir).start()
                self._services.append(store)
                self.redis_url = store.url
            o = self.options
            if o.processes > 0:  # services only (processes=0): callers make their own topics
                ensure_topics(self.bootstrap, {o.events_topic: o.events_partitions or o.processes,
                                               o.items_topic: 1, f"{o.events_topic}.dlq": 1})
            self.redis = redis.Redis.from_url(self.redis_url)
        except BaseException:
            self.stop()
            raise
        return self

    def send_catalog(self, catalog: list[dict]) -> int:
        from connectors.replay import produce_catalog

        return produce_catalog(self.bootstrap, self.options.items_topic, catalog)

    def send_events(self, events: Iterable[dict], **kwargs) -> int:
        """Produce events to the events topic (``connectors.replay.produce_events`` options)."""
        from connectors.replay import produce_events

        return produce_events(self.bootstrap, self.options.events_topic, events, **kwargs)

    def start_workers(self) -> float:
        """Start the worker processes; return the seconds until one probe event was answered
        (every event sent before it has then been read)."""
        if self.redis is None:
            self.start_services()
        self.workers = WorkerGroup(self.env, processes=self.options.processes, log_dir=self.work_dir).start()
        probe_user = f"streamrec-probe-{uuid.uuid4().hex[:6]}"
        probe = {"event_id": f"probe-{time.time_ns()}", "ts": time.time(), "user_id": probe_user,
                 "type": "search", "context": {"query": "warm-up"}}
        t0 = time.monotonic()
        self.send_events([probe])
        while time.monotonic() - t0 < self.options.start_timeout:
            raw = self.redis.get(self.keys.latest(probe_user))
            if raw and orjson.loads(raw)["trigger_event_id"] == probe["event_id"]:
                self.redis.delete(self.keys.latest(probe_user), self.keys.profile(probe_user))
                return time.monotonic() - t0
            if not self.workers.alive():
                raise StreamrecError("the worker exited during start-up:\n" + self.workers.log_tail())
            time.sleep(0.05)
        raise StreamrecError(f"the worker did not answer within {self.options.start_timeout:.0f}s:\n"
                             + self.workers.log_tail())

    def start_gateway(self, catalog: list[dict] | None = None, env: Mapping[str, str] | None = None):
        """Serve the gateway in a thread (needs the ``gateway`` extra); return its handle."""
        from gateway.server import serve_in_thread

        self.gateway = serve_in_thread({**self.env, **(env or {})}, catalog=catalog)
        return self.gateway

    def stop(self) -> None:
        """Stop what this stack started: gateway, workers, then Redis and the broker."""
        if self.gateway is not None:
            self.gateway.stop()
            self.gateway = None
        if self.workers is not None:
            self.workers.stop()
            self.workers = None
        if self.redis is not None:
            self.redis.close()
            self.redis = None
        for service in reversed(self._services):
            service.stop()
        self._services = []

    def __enter__(self) -> "LocalStack":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


class _ShopStack(LocalStack):
    catalog: list[dict]
    categories: list[str]

    def items_of(self, category: str) -> list[dict]:
        """The available items of one category of the generated catalog."""
        return [i for i in self.catalog if i["category"] == category and i.get("available", True)]


def shop_stack(work_dir: str | Path, *, bootstrap: str | None = None, redis_url: str | None = None,
               n_items: int = 240, n_categories: int = 6, n_users: int = 150, warm_events: int = 3000,
               seed: int = 3, gateway_env: Mapping[str, str] | None = None) -> _ShopStack:
    """A generated shop with warm-up traffic (co-visitation and trending exist), the worker
    caught up with it and the gateway serving; topics and prefix unique to this run."""
    from workloads.traffic import TrafficConfig, generate_catalog, generate_events

    run = uuid.uuid4().hex[:8]
    topic = f"gw-events-{run}"
    # The browser's clicks are live; the warm-up traffic ended a minute ago.
    options = StackOptions(events_topic=topic, items_topic=f"{topic}-items", prefix=f"gw{run}",
                           worker_env={"STREAMREC_SESSION_GAP": "1800"})
    stack = _ShopStack(work_dir, options, bootstrap=bootstrap, redis_url=redis_url)
    try:
        stack.start_services()
        cfg = TrafficConfig(n_users=n_users, n_items=n_items, n_categories=n_categories, seed=seed,
                            start_ts=time.time() - 3600.0,
                            # the warm-up spans the last ~50 minutes of event time
                            event_rate=warm_events / 3000.0)
        stack.catalog = generate_catalog(cfg)
        stack.categories = sorted({i["category"] for i in stack.catalog})
        stack.send_catalog(stack.catalog)
        warm = [e for e in generate_events(cfg, warm_events) if e["ts"] < time.time() - 5]
        stack.send_events(warm, stamp_produce_time=False)
        stack.start_workers()
        stack.start_gateway(stack.catalog, gateway_env)
    except BaseException:
        stack.stop()
        raise
    return stack
