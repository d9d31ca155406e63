"""The worker's Prometheus metrics, defined in one place.

Every metric lives in ``prometheus_client``'s default registry, which is what Bytewax's
own Dataflow API serves at ``/metrics`` (``BYTEWAX_DATAFLOW_API_ENABLED=1``, port 3030)
next to its Rust-side step metrics, and what the worker's own endpoint serves (see
``connectors.ops_server``). Names, types and meaning: ``docs/operations.md``.

Hot-path cost: the event counter is a :class:`Tally` (a plain dict increment in a
per-thread dict, summed when Prometheus scrapes), and the latency histogram is a
:class:`BatchHistogram` (one numpy call per sink batch), so no per-event lock is taken.

>>> t = Tally("demo_things_total", "Things seen.", "kind", registry=None)
>>> t.add("a"); t.add("b", 2); t.add("a")
>>> sorted((s.labels["kind"], float(s.value)) for s in next(iter(t.collect())).samples)
[('a', 2.0), ('b', 2.0)]
>>> h = BatchHistogram("demo_seconds", "Latency.", (0.1, 1.0), registry=None)
>>> h.observe_many([0.05, 0.1, 0.5, 3.0])
>>> [(s.labels.get("le"), s.value) for s in next(iter(h.collect())).samples][:3]
[('0.1', 2.0), ('1.0', 3.0), ('+Inf', 4.0)]
"""

from __future__ import annotations

import threading
import time
from typing import Iterable, Sequence

import numpy as np
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

__all__ = [
    "Tally", "BatchHistogram", "WorkerHealth", "HEALTH",
    "EVENTS", "GUARDED", "DEAD_LETTERS", "LISTS_WRITTEN", "PROFILES_WRITTEN", "EVENT_TO_REDIS",
    "SINK_BATCH_SIZE", "SINK_WRITE_SECONDS", "REDIS_ERRORS", "REDIS_RETRIES", "REDIS_UP",
    "KAFKA_LAG", "KAFKA_UP", "LAST_BATCH_TIME", "RANK_CALL_SECONDS", "RANK_CALL_REQUESTS",
    "ERASURES_PENDING",
]

# End-to-end latency buckets (seconds): the target is milliseconds, an outage is minutes.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                   10.0, 30.0, 60.0, 300.0)


class Tally(Collector):
    """A counter with one label, incremented without a lock on the hot path.

    Each thread adds into a dict of its own (one writer per dict, so nothing is lost);
    a scrape sums the dicts. ``dict.copy`` runs in C under the GIL, so a scrape never
    sees a dict change size under it. The dicts are found by thread id, not through
    ``threading.local``: Bytewax calls Python from its worker threads with a Python
    thread state that lasts one call, so a thread-local dict was a new one (and one more
    to keep and sum) every batch.
    """

    def __init__(self, name: str, documentation: str, label: str,
                 registry: CollectorRegistry | None = REGISTRY) -> None:
        self.name = name
        self.documentation = documentation
        self.label = label
        self._shards: dict[int, dict[str, int]] = {}  # thread id -> its counts
        self._lock = threading.Lock()
        if registry is not None:
            registry.register(self)

    def _shard(self, thread: int) -> dict[str, int]:
        with self._lock:
            return self._shards.setdefault(thread, {})

    def add(self, key: str, n: int = 1) -> None:
        counts = self._shards.get(threading.get_ident())
        if counts is None:
            counts = self._shard(threading.get_ident())
        counts[key] = counts.get(key, 0) + n

    def totals(self) -> dict[str, int]:
        out: dict[str, int] = {}
        with self._lock:
            shards = list(self._shards.values())
        for shard in shards:
            for key, n in dict.copy(shard).items():
                out[key] = out.get(key, 0) + n
        return out

    def collect(self) -> Iterable[CounterMetricFamily]:
        family = CounterMetricFamily(self.name, self.documentation, labels=[self.label])
        for key, n in sorted(self.totals().items()):
            family.add_metric([key], n)
        yield family

    def describe(self) -> Iterable[CounterMetricFamily]:
        yield CounterMetricFamily(self.name, self.documentation, labels=[self.label])


class BatchHistogram(Collector):
    """A histogram fed a batch of observations at a time (one numpy call per batch)."""

    def __init__(self, name: str, documentation: str, buckets: Sequence[float],
                 registry: CollectorRegistry | None = REGISTRY) -> None:
        self.name = name
        self.documentation = documentation
        self.buckets = tuple(float(b) for b in buckets)
        self._bounds = np.asarray(self.buckets)
        self._counts = np.zeros(len(self.buckets) + 1, dtype=np.int64)
        self._sum = 0.0
        self._lock = threading.Lock()
        if registry is not None:
            registry.register(self)

    def observe_many(self, values: Sequence[float] | np.ndarray) -> None:
        arr = np.asarray(values, dtype=np.float64)
        if arr.size == 0:
            return
        # side="left": a value equal to a bound falls in that bucket (Prometheus `le`).
        idx = np.searchsorted(self._bounds, arr, side="left")
        counts = np.bincount(idx, minlength=len(self._counts))
        total = float(arr.sum())
        with self._lock:
            self._counts += counts
            self._sum += total

    def collect(self) -> Iterable[HistogramMetricFamily]:
        with self._lock:
            cumulative = np.cumsum(self._counts).tolist()
            total = self._sum
        bounds = [repr(b) for b in self.buckets] + ["+Inf"]
        family = HistogramMetricFamily(self.name, self.documentation)
        family.add_metric([], list(zip(bounds, (float(c) for c in cumulative))), total)
        yield family

    def describe(self) -> Iterable[HistogramMetricFamily]:
        yield HistogramMetricFamily(self.name, self.documentation)


class WorkerHealth:
    """What readiness is made of, written by the sink and the Kafka probe."""

    def __init__(self) -> None:
        self.sinks_built = 0  # Redis sink partitions running: the flow has started
        self.redis_outage_since: float | None = None  # monotonic; set while writes fail
        self.last_batch_at: float | None = None  # wall clock of the last written batch

    def batch_written(self) -> None:
        self.last_batch_at = time.time()


HEALTH = WorkerHealth()

EVENTS = Tally("streamrec_events_total",
               "Valid input events parsed, by event type.", "type")
GUARDED = Tally("streamrec_guarded_events_total",
                "Events the guards kept from learning, by reason (burst: over a user's per-minute "
                "limit by broker time; duplicate: an event_id seen before; fresh_id_flood: one "
                "of too many brand-new ids on one item in a minute).", "reason")
DEAD_LETTERS = Tally("streamrec_dead_letters_total",
                     "Dead letters written to Redis, by reason code.", "reason")
LISTS_WRITTEN = Counter("streamrec_lists_written",
                        "Recommendation updates written to the recs stream.")
PROFILES_WRITTEN = Counter("streamrec_profiles_written",
                           "Profile writes sent to Redis (guarded by sequence number).")
EVENT_TO_REDIS = BatchHistogram(
    "streamrec_event_to_redis_seconds",
    "Seconds from an event entering Kafka to its recommendation update written to Redis.",
    LATENCY_BUCKETS)
SINK_BATCH_SIZE = Histogram(
    "streamrec_batch_size", "Items in one Redis sink batch (updates, profiles, dead letters).",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000))
SINK_WRITE_SECONDS = Histogram(
    "streamrec_redis_write_seconds", "Seconds to write one sink batch to Redis, retries included.",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 30.0))
ATTRIBUTED = Counter("streamrec_attributed",
                     "Attributed outcomes of written lists (models.attribution): kind is "
                     "impression, click, cart or purchase; CTR = rate(click) / rate(impression).",
                     ["kind", "variant", "strategy"])
ATTRIBUTED_REVENUE = Counter("streamrec_attributed_revenue",
                             "Revenue (purchase event values) credited to lists.",
                             ["variant", "strategy"])
STATE_KEYS = Gauge("streamrec_state_keys",
                   "Keys this process holds in state, by step: user (profiles), item (items "
                   "with co-visitation and popularity state).", ["step"])
USER_KEYS = STATE_KEYS.labels("user")
ITEM_KEYS = STATE_KEYS.labels("item")
RANK_USERS = Gauge("streamrec_rank_users",
                   "Users with ranking state (blend feedback, last list, attribution) in this "
                   "process's rank shards.")
# One ranking call scores a run of complete requests of one rank shard together: its cost
# is a fixed part per call plus a part per request, so calls that rank one or two
# requests each (small batches at low rates) cost the most per list.
RANK_CALL_SECONDS = Histogram(
    "streamrec_rank_call_seconds", "Seconds of one ranking call (a run of one rank shard's "
    "complete requests scored together).",
    buckets=(0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0))
RANK_CALL_REQUESTS = Histogram(
    "streamrec_rank_call_requests", "Requests scored in one ranking call.",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000))
ERASURES_PENDING = Gauge(
    "streamrec_erasures_pending",
    "Erasures whose stream entries are still being removed (connectors.erasure_scan).")
ERASURE_SCANS = Counter(
    "streamrec_erasure_scans",
    "Erasures that had to scan the recs stream (entries the sink could not know by id: "
    "written before this worker started or a write failed; connectors.recs_index).")
REDIS_ERRORS = Counter("streamrec_redis_errors",
                       "Failed Redis writes, by error kind.", ["kind"])
REDIS_RETRIES = Counter("streamrec_redis_retries",
                        "Redis retries (client-level reconnects and whole-batch retries).")
REDIS_UP = Gauge("streamrec_redis_up", "1 while the last Redis write or probe succeeded, else 0.")
KAFKA_UP = Gauge("streamrec_kafka_up", "1 while the last Kafka watermark probe succeeded, else 0.")
KAFKA_LAG = Gauge("streamrec_kafka_consumer_lag",
                  "Messages in a partition after the last one this process read "
                  "(high watermark minus next offset), refreshed on every scrape.",
                  ["topic", "partition"])
LAST_BATCH_TIME = Gauge("streamrec_last_batch_timestamp_seconds",
                        "Unix time of the last batch written to Redis.")
LAST_BATCH_TIME.set_function(lambda: HEALTH.last_batch_at or 0.0)
