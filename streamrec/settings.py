"""One frozen settings object, parsed once from the environment at the entry point.

Every knob has a default so that a bare `python -m bytewax.run dataflows.recommend`
starts against a local broker and Redis. Kafka security settings pass straight through
to confluent-kafka: any variable ``KAFKA_X_Y`` other than ``KAFKA_BOOTSTRAP_SERVERS``
becomes the librdkafka property ``x.y`` (for example ``KAFKA_SASL_MECHANISM=PLAIN``,
``KAFKA_SECURITY_PROTOCOL=SASL_SSL``, ``KAFKA_SASL_PASSWORD=...``). Secret values are
never shown by ``repr`` or logs: see :meth:`Settings.redacted`.

>>> s = Settings.from_env({"STREAMREC_TOP_K": "10", "KAFKA_SASL_PASSWORD": "hunter2"})
>>> s.top_k, s.events_topic, s.kafka_config["sasl.password"]
(10, 'events', 'hunter2')
>>> "hunter2" in repr(s)
False

Worker processes started by a tool (a multi-process replay, say) receive the parent's
object whole, as JSON of every field, rather than a rebuilt environment:

>>> Settings.from_json(s.to_json()) == s
True
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from dataclasses import dataclass, field
from typing import Mapping
from urllib.parse import urlsplit, urlunsplit

import orjson

from streamrec.errors import ConfigError
from streamrec.gc_tuning import DEFAULT_GC_THRESHOLD
from streamrec.settings_env import env_values

__all__ = ["Settings", "DEFAULT_EVENT_WEIGHTS", "SETTINGS_JSON_ENV", "redact_url"]

#: Environment variable that carries a whole Settings object (``Settings.to_json``) to a
#: child process; only tools that start workers themselves set it.
SETTINGS_JSON_ENV = "STREAMREC_SETTINGS_JSON"

# Engagement weight of one event of each type. hover and dwell are scaled by their
# duration (value in ms, see ``models.events.engagement``); scroll by its depth.
DEFAULT_EVENT_WEIGHTS: dict[str, float] = {
    "view": 1.0,
    "click": 2.0,
    "hover": 0.5,
    "scroll": 0.5,
    "dwell": 1.0,
    "add_to_cart": 5.0,
    "remove_from_cart": -2.0,
    "wishlist": 4.0,
    "purchase": 10.0,
    "rating": 2.0,
    "impression": 0.0,
}

_SECRET_HINTS = ("password", "secret", "token", "key")


def redact_url(url: str) -> str:
    """A URL safe to log: the password (in the user part or a ``password=`` query) masked.

    >>> redact_url("redis://streamrec:s3cret@redis:6379/0")
    'redis://streamrec:***@redis:6379/0'
    >>> redact_url("rediss://:s3cret@redis:6380/0?password=s3cret&ssl_cert_reqs=required")
    'rediss://:***@redis:6380/0?password=***&ssl_cert_reqs=required'
    >>> redact_url("redis://redis:6379/0")
    'redis://redis:6379/0'
    """
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        creds, host = netloc.rsplit("@", 1)
        if ":" in creds:
            creds = creds.split(":", 1)[0] + ":***"
        netloc = f"{creds}@{host}"
    query = "&".join(
        f"{k}=***" if k.lower() in ("password", "pass", "pwd") else part
        for part in parts.query.split("&") if part
        for k in [part.split("=", 1)[0]]
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


@dataclass(frozen=True)
class Settings:
    """Everything the worker, the CLI and the tools need, from environment variables."""

    kafka_bootstrap_servers: str = "localhost:9092"
    events_topic: str = "events"
    items_topic: str = "items"
    redis_url: str = field(default="redis://localhost:6379/0", repr=False)
    prefix: str = "streamrec"
    top_k: int = 20
    # Kafka
    kafka_config: Mapping[str, str] = field(default_factory=dict, repr=False)
    # Where events come from: "kafka" (default) or "rabbitmq" (docs/rabbitmq.md)
    source: str = "kafka"
    rabbitmq_url: str = field(default="amqp://guest:guest@localhost:5672/%2F", repr=False)
    rabbitmq_events_queues: tuple[str, ...] = ("events",)  # one partition per queue
    rabbitmq_items_queue: str = "items"
    rabbitmq_prefetch: int = 5000  # unacknowledged messages per consumer (>= 2 epochs of events)
    rabbitmq_batch_size: int = 1000
    rabbitmq_consumers_per_queue: int = 1  # > 1: competing consumers, no per-user order
    kafka_batch_size: int = 1000
    kafka_fetch_wait_ms: int = 5
    consume_items: bool = True
    catalog_file: str | None = None
    controls_topic: str = "controls"  # merchandising rule records (docs/merchandising.md)
    consume_controls: bool = True
    # Redis output
    recs_maxlen: int = 100_000
    dlq_maxlen: int = 100_000
    dlq_payload_limit: int = 2048
    conflate: bool = True
    write_profiles: bool = True
    redis_timeout: float = 5.0  # socket connect/read timeout, seconds
    redis_retries: int = 3  # client-level retries of one command or pipeline (blips)
    redis_retry_budget: float = 300.0  # seconds a failing batch is retried before the worker stops
    # Operations
    metrics_port: int = 9464  # base port of /metrics, /healthz, /readyz (+ process id); 0: off
    metrics_host: str = "0.0.0.0"
    log_format: str = "text"  # "text" | "json"
    # Cyclic garbage collector thresholds of a worker (streamrec.gc_tuning); None: CPython's
    gc_threshold: tuple[int, int, int] | None = DEFAULT_GC_THRESHOLD
    # Profiles and decay (event time, seconds)
    long_half_life: float = 7 * 24 * 3600.0
    session_half_life: float = 1800.0
    covis_half_life: float = 30 * 24 * 3600.0  # tuned on warm-up data, see docs/tuning.md
    trending_half_life: float = 6 * 3600.0
    session_gap: float = 1800.0
    event_weights: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_EVENT_WEIGHTS))
    # Bounds
    max_recent_items: int = 30
    max_dedupe_ids: int = 64
    max_categories: int = 32
    max_neighbours: int = 80
    answer_neighbours: int = 40
    query_items: int = 3
    knn_sessions: int = 50  # recent sessions kept per item for the session-kNN signal (0: off)
    content_search_window: int = 2048  # content recall: nearest among the items put last (0: all)
    category_candidates: int = 30  # trending items taken per category (and segment) as candidates
    # Ranking
    rank_shards: int = 8
    trend_shards: int = 4
    repeat_policy: str = "allow"  # "allow" (learned `seen` weight) | "demote" | "exclude"
    repeat_factor: float = 0.6
    diversity: float = 0.01  # MMR damping per earlier pick of a category; tuned, see docs/tuning.md
    covis_window: int = 5
    backward_weight: float = 0.5
    anchor_decay: float = 0.5
    w_session: float = 0.3
    session_decay: float = 0.7  # re-finding: weight of the n-th most recent session item, decay**n
    w_seen: float = 0.0
    w_content: float = 0.1
    w_mf: float = 0.05
    learn_blend: bool = True
    blend_learning_rate: float = 0.05
    feedback_negatives: int = 30
    w_category: float = 0.25
    w_segment: float = 0.25
    w_trending: float = 0.05
    max_per_category: int = 0  # 0: no hard cap, MMR only
    new_item_slots: int = 1  # last slots of a list that may show new catalog items (0: off)
    new_item_window: float = 7 * 24 * 3600.0  # event time a catalog item without interactions is new
    # Guards
    max_events_per_minute: int = 600
    max_fresh_per_item_minute: int = 120  # brand-new ids' interactions one item may count
    max_clock_skew: float = 24 * 3600.0
    # Live worker only, 0 = off: older events go to the DLQ (ts:too_old). Off by default
    # because benchmarks and `demo --events` feed recorded (old) events to the live worker.
    max_event_age: float = 0.0
    model_version: str = "streamrec-0.1"
    # Experiments and attribution (docs/experiments.md)
    experiment: str = ""  # JSON: {"name": ..., "variants": [...]}; empty: one learned blend
    attribution: bool = True  # attribute impressions, clicks and sales to lists; metrics windows
    attribution_window: float = 3600.0  # event time a list earns clicks and sales
    metrics_lateness: float = 30.0  # seconds a metrics window waits for late outcomes
    outcomes_maxlen: int = 1_000_000  # {prefix}:outcomes stream length (MAXLEN ~)
    impression_fatigue: float = 0.85  # score factor per recent list an item was seen in, unclicked
    # Privacy: with a key, user ids are replaced by keyed hashes in the parse step
    # (streamrec.pseudonyms, docs/privacy.md); empty keeps them as sent.
    user_id_key: str = field(default="", repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        """Parse settings from ``env`` (default ``os.environ``); raise ConfigError with the fix."""
        env = os.environ if env is None else env
        kw = env_values(env, cls, DEFAULT_EVENT_WEIGHTS)
        settings = cls(**kw)
        settings.validate()
        return settings

    def to_json(self) -> str:
        """Every field as one JSON object (secrets included: for child processes only)."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for name, value in values.items():
            if isinstance(value, Mapping):
                values[name] = dict(value)
        return orjson.dumps(values, option=orjson.OPT_SORT_KEYS).decode()

    @classmethod
    def from_json(cls, text: str | bytes) -> "Settings":
        """The Settings that :meth:`to_json` wrote; raise ConfigError on anything else."""
        try:
            values = orjson.loads(text)
        except orjson.JSONDecodeError as ex:
            msg = f"{SETTINGS_JSON_ENV}: not JSON ({ex}); it is written by Settings.to_json, do not set it by hand"
            raise ConfigError(msg) from ex
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names) if isinstance(values, dict) else ["<not an object>"]
        if unknown:
            msg = (f"{SETTINGS_JSON_ENV}: unknown settings {', '.join(unknown)}; the parent process "
                   "runs another streamrec version than this one: install the same one")
            raise ConfigError(msg)
        tuples = {f.name for f in dataclasses.fields(cls) if isinstance(f.default, tuple)}
        values = {k: tuple(v) if k in tuples and isinstance(v, list) else v
                  for k, v in values.items()}  # JSON has no tuples
        settings = cls(**values)
        settings.validate()
        return settings

    def fingerprint(self) -> str:
        """A short digest of every field: equal fingerprints, equal settings (safe to log)."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]

    def validate(self) -> None:
        if self.repeat_policy not in ("allow", "demote", "exclude"):
            msg = f"STREAMREC_REPEAT_POLICY={self.repeat_policy!r} must be allow, demote or exclude"
            raise ConfigError(msg)
        if not 0.0 < self.impression_fatigue <= 1.0:
            msg = (f"STREAMREC_IMPRESSION_FATIGUE={self.impression_fatigue} must be in (0, 1] "
                   "(1 turns it off), e.g. 0.85")
            raise ConfigError(msg)
        if not 0.0 < self.session_decay <= 1.0:
            msg = f"STREAMREC_SESSION_DECAY={self.session_decay} must be in (0, 1], e.g. 0.6"
            raise ConfigError(msg)
        if not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            msg = "REDIS_URL must start with redis://, rediss:// or unix:// (e.g. redis://localhost:6379/0)"
            raise ConfigError(msg)
        if self.metrics_port > 65535:
            msg = f"STREAMREC_METRICS_PORT={self.metrics_port} is not a TCP port; use 1..65535 or 0 (off)"
            raise ConfigError(msg)
        if self.log_format not in ("text", "json"):
            msg = f"STREAMREC_LOG_FORMAT={self.log_format!r} must be text or json"
            raise ConfigError(msg)
        if self.user_id_key and len(self.user_id_key) < 16:
            msg = ("STREAMREC_USER_ID_KEY is shorter than 16 characters; generate one with "
                   "python -c 'import secrets; print(secrets.token_urlsafe(32))'")
            raise ConfigError(msg)
        if self.source not in ("kafka", "rabbitmq"):
            msg = f"STREAMREC_SOURCE={self.source!r} must be kafka or rabbitmq"
            raise ConfigError(msg)
        if self.source == "rabbitmq":
            if not self.rabbitmq_url.startswith(("amqp://", "amqps://")):
                msg = ("RABBITMQ_URL must start with amqp:// or amqps:// "
                       "(e.g. amqp://user:password@rabbitmq:5672/%2F)")
                raise ConfigError(msg)
            if not self.rabbitmq_events_queues or len(set(self.rabbitmq_events_queues)) != len(
                    self.rabbitmq_events_queues):
                msg = ("RABBITMQ_EVENTS_QUEUE must name one queue or a comma-separated list "
                       "of distinct queues (e.g. events or events.0,events.1)")
                raise ConfigError(msg)
            if self.rabbitmq_prefetch < self.rabbitmq_batch_size:
                msg = (f"RABBITMQ_PREFETCH={self.rabbitmq_prefetch} is below RABBITMQ_BATCH_SIZE="
                       f"{self.rabbitmq_batch_size}; raise the prefetch (see docs/rabbitmq.md)")
                raise ConfigError(msg)
        if not self.kafka_bootstrap_servers.strip():
            msg = "KAFKA_BOOTSTRAP_SERVERS is empty; set it like localhost:9092"
            raise ConfigError(msg)
        if self.experiment:
            from models.experiments import InvalidExperiment, parse_experiment

            try:
                parse_experiment(self.experiment)
            except InvalidExperiment as ex:
                msg = (f"STREAMREC_EXPERIMENT: {ex}. Example: "
                       '{"name": "e1", "variants": [{"name": "learned", "share": 0.9}, '
                       '{"name": "popular", "share": 0.1, "signals": ["trending"]}]}')
                raise ConfigError(msg) from ex

    @property
    def brokers(self) -> list[str]:
        return [b.strip() for b in self.kafka_bootstrap_servers.split(",") if b.strip()]

    @property
    def dlq_topic(self) -> str:
        return f"{self.events_topic}.dlq"

    def replace(self, **changes) -> "Settings":
        return dataclasses.replace(self, **changes)

    def redacted(self) -> dict:
        """Settings as a dict safe to log: secrets masked."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in ("redis_url", "rabbitmq_url"):
                value = redact_url(value)
            elif f.name == "user_id_key":
                value = "***" if value else ""
            elif f.name == "kafka_config":
                value = {
                    k: ("***" if any(h in k for h in _SECRET_HINTS) else v) for k, v in value.items()
                }
            out[f.name] = value
        return out
