"""The worker's environment variables, read into the fields of ``Settings``.

Each variable names one field; a bad value raises ConfigError naming the variable and
an example of a valid value (the field's default). Any other ``KAFKA_X_Y`` becomes the
librdkafka property ``x.y``.

>>> from streamrec.settings import Settings, DEFAULT_EVENT_WEIGHTS
>>> kw = env_values({"STREAMREC_TOP_K": "10", "KAFKA_SASL_MECHANISM": "PLAIN"},
...                 Settings, DEFAULT_EVENT_WEIGHTS)
>>> kw["top_k"], kw["kafka_config"]
(10, {'sasl.mechanism': 'PLAIN'})
>>> env_values({"STREAMREC_TOP_K": "ten"}, Settings, DEFAULT_EVENT_WEIGHTS)
Traceback (most recent call last):
...
streamrec.errors.ConfigError: STREAMREC_TOP_K='ten' is not a valid int; set it like STREAMREC_TOP_K=20
"""

from __future__ import annotations

import math
from typing import Mapping

from streamrec.errors import ConfigError
from streamrec.gc_tuning import parse_gc_threshold

__all__ = ["env_values"]


def env_values(env: Mapping[str, str], defaults: type,
               event_weights: Mapping[str, float]) -> dict:
    """The fields ``env`` sets, as keyword arguments for ``Settings``; ``defaults`` (the
    class) gives the examples in error messages, ``event_weights`` the weights that
    ``STREAMREC_EVENT_WEIGHTS`` changes."""
    kw: dict = {}

    def text(var: str, attr: str) -> None:
        if env.get(var):
            kw[attr] = env[var]

    def number(var: str, attr: str, kind: type, minimum: float) -> None:
        raw = env.get(var)
        if raw is None or raw == "":
            return
        try:
            value = kind(raw)
        except ValueError as ex:
            msg = f"{var}={raw!r} is not a valid {kind.__name__}; set it like {var}={getattr(defaults, attr)!r}"
            raise ConfigError(msg) from ex
        if isinstance(value, float) and not math.isfinite(value) or value < minimum:
            msg = f"{var}={raw!r} must be a finite number >= {minimum}"
            raise ConfigError(msg)
        kw[attr] = value

    def flag(var: str, attr: str) -> None:
        raw = env.get(var)
        if raw is None or raw == "":
            return
        low = raw.strip().lower()
        if low in ("1", "true", "yes", "on"):
            kw[attr] = True
        elif low in ("0", "false", "no", "off"):
            kw[attr] = False
        else:
            msg = f"{var}={raw!r} must be one of 1/0, true/false, yes/no, on/off"
            raise ConfigError(msg)

    text("KAFKA_BOOTSTRAP_SERVERS", "kafka_bootstrap_servers")
    text("STREAMREC_EVENTS_TOPIC", "events_topic")
    text("STREAMREC_ITEMS_TOPIC", "items_topic")
    text("REDIS_URL", "redis_url")
    text("STREAMREC_SOURCE", "source")
    text("RABBITMQ_URL", "rabbitmq_url")
    text("RABBITMQ_ITEMS_QUEUE", "rabbitmq_items_queue")
    if env.get("RABBITMQ_EVENTS_QUEUE"):
        kw["rabbitmq_events_queues"] = tuple(
            q.strip() for q in env["RABBITMQ_EVENTS_QUEUE"].split(",") if q.strip())
    number("RABBITMQ_PREFETCH", "rabbitmq_prefetch", int, 1)
    number("RABBITMQ_BATCH_SIZE", "rabbitmq_batch_size", int, 1)
    number("RABBITMQ_CONSUMERS_PER_QUEUE", "rabbitmq_consumers_per_queue", int, 1)
    text("STREAMREC_PREFIX", "prefix")
    text("STREAMREC_CATALOG_FILE", "catalog_file")
    text("STREAMREC_CONTROLS_TOPIC", "controls_topic")
    text("STREAMREC_MODEL_VERSION", "model_version")
    text("STREAMREC_REPEAT_POLICY", "repeat_policy")
    text("STREAMREC_USER_ID_KEY", "user_id_key")
    text("STREAMREC_EXPERIMENT", "experiment")
    flag("STREAMREC_ATTRIBUTION", "attribution")
    number("STREAMREC_ATTRIBUTION_WINDOW", "attribution_window", float, 1.0)
    number("STREAMREC_METRICS_LATENESS", "metrics_lateness", float, 0.0)
    number("STREAMREC_OUTCOMES_MAXLEN", "outcomes_maxlen", int, 1)
    number("STREAMREC_IMPRESSION_FATIGUE", "impression_fatigue", float, 0.0)
    number("STREAMREC_TOP_K", "top_k", int, 1)
    number("STREAMREC_KAFKA_BATCH_SIZE", "kafka_batch_size", int, 1)
    number("STREAMREC_KAFKA_FETCH_WAIT_MS", "kafka_fetch_wait_ms", int, 0)
    number("STREAMREC_RECS_MAXLEN", "recs_maxlen", int, 1)
    number("STREAMREC_DLQ_MAXLEN", "dlq_maxlen", int, 1)
    number("STREAMREC_DLQ_PAYLOAD_LIMIT", "dlq_payload_limit", int, 16)
    number("STREAMREC_LONG_HALF_LIFE", "long_half_life", float, 1.0)
    number("STREAMREC_SESSION_HALF_LIFE", "session_half_life", float, 1.0)
    number("STREAMREC_COVIS_HALF_LIFE", "covis_half_life", float, 1.0)
    number("STREAMREC_TRENDING_HALF_LIFE", "trending_half_life", float, 1.0)
    number("STREAMREC_SESSION_GAP", "session_gap", float, 1.0)
    number("STREAMREC_MAX_RECENT_ITEMS", "max_recent_items", int, 1)
    number("STREAMREC_MAX_NEIGHBOURS", "max_neighbours", int, 1)
    number("STREAMREC_ANSWER_NEIGHBOURS", "answer_neighbours", int, 1)
    number("STREAMREC_QUERY_ITEMS", "query_items", int, 1)
    number("STREAMREC_RANK_SHARDS", "rank_shards", int, 1)
    number("STREAMREC_TREND_SHARDS", "trend_shards", int, 1)
    number("STREAMREC_DIVERSITY", "diversity", float, 0.0)
    number("STREAMREC_REPEAT_FACTOR", "repeat_factor", float, 0.0)
    number("STREAMREC_COVIS_WINDOW", "covis_window", int, 1)
    number("STREAMREC_KNN_SESSIONS", "knn_sessions", int, 0)
    number("STREAMREC_CONTENT_SEARCH_WINDOW", "content_search_window", int, 0)
    number("STREAMREC_CATEGORY_CANDIDATES", "category_candidates", int, 1)
    number("STREAMREC_BACKWARD_WEIGHT", "backward_weight", float, 0.0)
    number("STREAMREC_ANCHOR_DECAY", "anchor_decay", float, 0.0)
    number("STREAMREC_W_CATEGORY", "w_category", float, 0.0)
    number("STREAMREC_W_SESSION", "w_session", float, 0.0)
    number("STREAMREC_SESSION_DECAY", "session_decay", float, 0.0)
    number("STREAMREC_W_SEEN", "w_seen", float, -1e9)
    number("STREAMREC_W_CONTENT", "w_content", float, 0.0)
    number("STREAMREC_W_MF", "w_mf", float, 0.0)
    number("STREAMREC_BLEND_LEARNING_RATE", "blend_learning_rate", float, 0.0)
    number("STREAMREC_FEEDBACK_NEGATIVES", "feedback_negatives", int, 1)
    flag("STREAMREC_LEARN_BLEND", "learn_blend")
    number("STREAMREC_W_SEGMENT", "w_segment", float, 0.0)
    number("STREAMREC_W_TRENDING", "w_trending", float, 0.0)
    number("STREAMREC_MAX_PER_CATEGORY", "max_per_category", int, 0)
    number("STREAMREC_NEW_ITEM_SLOTS", "new_item_slots", int, 0)
    number("STREAMREC_NEW_ITEM_WINDOW", "new_item_window", float, 0.0)
    number("STREAMREC_MAX_EVENTS_PER_MINUTE", "max_events_per_minute", int, 1)
    number("STREAMREC_MAX_FRESH_PER_ITEM_MINUTE", "max_fresh_per_item_minute", int, 1)
    number("STREAMREC_MAX_CLOCK_SKEW", "max_clock_skew", float, 0.0)
    number("STREAMREC_REDIS_TIMEOUT", "redis_timeout", float, 0.01)
    number("STREAMREC_REDIS_RETRIES", "redis_retries", int, 0)
    number("STREAMREC_REDIS_RETRY_BUDGET", "redis_retry_budget", float, 0.0)
    number("STREAMREC_METRICS_PORT", "metrics_port", int, 0)
    text("STREAMREC_METRICS_HOST", "metrics_host")
    text("STREAMREC_LOG_FORMAT", "log_format")
    if env.get("STREAMREC_GC_THRESHOLD"):
        try:
            kw["gc_threshold"] = parse_gc_threshold(env["STREAMREC_GC_THRESHOLD"])
        except ValueError as ex:
            raise ConfigError(str(ex)) from None
    number("STREAMREC_MAX_EVENT_AGE", "max_event_age", float, 0.0)
    flag("STREAMREC_CONFLATE", "conflate")
    flag("STREAMREC_WRITE_PROFILES", "write_profiles")
    flag("STREAMREC_CONSUME_ITEMS", "consume_items")
    flag("STREAMREC_CONSUME_CONTROLS", "consume_controls")

    weights = dict(event_weights)
    raw_weights = env.get("STREAMREC_EVENT_WEIGHTS")
    if raw_weights:
        # "view=1,click=2,purchase=10"
        for part in raw_weights.split(","):
            name, _, val = part.partition("=")
            name = name.strip()
            if name not in weights:
                msg = f"STREAMREC_EVENT_WEIGHTS: unknown event type {name!r}; known: {', '.join(weights)}"
                raise ConfigError(msg)
            try:
                weights[name] = float(val)
            except ValueError as ex:
                msg = f"STREAMREC_EVENT_WEIGHTS: {part!r} is not name=number"
                raise ConfigError(msg) from ex
    kw["event_weights"] = weights

    kafka_config = {}
    for var, value in env.items():
        if var.startswith("KAFKA_") and var != "KAFKA_BOOTSTRAP_SERVERS":
            kafka_config[var[len("KAFKA_") :].lower().replace("_", ".")] = value
    kw["kafka_config"] = kafka_config
    return kw
