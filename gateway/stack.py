"""The whole pipeline on this machine, for the browser test, the click benchmark and the
load test: topics, a generated catalog (sent to the items topic so the worker knows
categories), some warm-up traffic (so co-visitation and trending exist), the real worker
(``python -m bytewax.run dataflows.recommend``) and the gateway in a thread.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import orjson
import redis

from connectors.embedded import ensure_topics
from connectors.redis_sink import RedisKeys
from connectors.replay import produce_catalog, produce_events
from connectors.traffic import TrafficConfig, generate_catalog, generate_events
from connectors.worker import WorkerGroup
from gateway.server import GatewayHandle, serve_in_thread
from streamrec.errors import StreamrecError

__all__ = ["PipelineOptions", "LocalPipeline"]


@dataclass(frozen=True)
class PipelineOptions:
    n_items: int = 240
    n_categories: int = 6
    n_users: int = 150
    warm_events: int = 3000
    seed: int = 3
    events_partitions: int = 1
    gateway_env: tuple[tuple[str, str], ...] = ()


class LocalPipeline:
    """Topics, catalog, warm-up traffic, worker and gateway; ``stop()`` ends what it started."""

    def __init__(self, bootstrap: str, redis_url: str, log_dir: str | Path, *,
                 options: PipelineOptions = PipelineOptions(), prefix: str | None = None,
                 topic: str | None = None, start_timeout: float = 90.0) -> None:
        """Start everything against a running broker (``bootstrap``) and Redis (``redis_url``).

        Returns once the worker has processed the warm-up traffic and the gateway listens.
        """
        run = uuid.uuid4().hex[:8]
        self.prefix = prefix or f"gw{run}"
        self.topic = topic or f"gw-events-{run}"
        self.items_topic = f"{self.topic}-items"
        self.keys = RedisKeys(self.prefix)
        self.env = {
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "REDIS_URL": redis_url,
            "STREAMREC_EVENTS_TOPIC": self.topic,
            "STREAMREC_ITEMS_TOPIC": self.items_topic,
            "STREAMREC_PREFIX": self.prefix,
            # The browser's clicks are live; the warm-up traffic ended a minute ago.
            "STREAMREC_SESSION_GAP": "1800",
        }
        self.workers: WorkerGroup | None = None
        self.gateway: GatewayHandle | None = None
        self.redis = redis.Redis.from_url(redis_url)
        ensure_topics(bootstrap, {self.topic: options.events_partitions, self.items_topic: 1,
                                  f"{self.topic}.dlq": 1})
        cfg = TrafficConfig(n_users=options.n_users, n_items=options.n_items,
                            n_categories=options.n_categories, seed=options.seed,
                            start_ts=time.time() - 3600.0,
                            # the warm-up spans the last ~50 minutes of event time
                            event_rate=options.warm_events / 3000.0)
        self.catalog = generate_catalog(cfg)
        self.categories = sorted({i["category"] for i in self.catalog})
        produce_catalog(bootstrap, self.items_topic, self.catalog)
        warm = [e for e in generate_events(cfg, options.warm_events) if e["ts"] < time.time() - 5]
        produce_events(bootstrap, self.topic, warm, stamp_produce_time=False)
        try:
            self.workers = WorkerGroup(self.env, log_dir=Path(log_dir)).start()
            self._wait_for_worker(bootstrap, start_timeout)
            self.gateway = serve_in_thread({**self.env, **dict(options.gateway_env)},
                                           catalog=self.catalog)
        except BaseException:
            self.stop()
            raise

    def _wait_for_worker(self, bootstrap: str, timeout: float) -> None:
        """One probe event after the warm-up: its list means the worker caught up."""
        probe_user = f"probe-{uuid.uuid4().hex[:6]}"
        probe = {"event_id": f"probe-{time.time_ns()}", "ts": time.time(), "user_id": probe_user,
                 "type": "search", "context": {"query": "warm-up"}}
        produce_events(bootstrap, self.topic, [probe])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            raw = self.redis.get(self.keys.latest(probe_user))
            if raw and orjson.loads(raw)["trigger_event_id"] == probe["event_id"]:
                return
            if not self.workers.alive():
                raise StreamrecError("the worker exited during start-up:\n" + self.workers.log_tail())
            time.sleep(0.05)
        raise StreamrecError(f"the worker did not catch up within {timeout:.0f}s:\n"
                             + self.workers.log_tail())

    def items_of(self, category: str) -> list[dict]:
        return [i for i in self.catalog if i["category"] == category and i.get("available", True)]

    def stop(self) -> None:
        if self.gateway is not None:
            self.gateway.stop()
            self.gateway = None
        if self.workers is not None:
            self.workers.stop()
            self.workers = None
        self.redis.close()

    def __enter__(self) -> "LocalPipeline":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
