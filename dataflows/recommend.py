"""The recommend dataflow: wiring only.

Run it with ``python -m bytewax.run dataflows.recommend`` (configuration from the
environment, see ``streamrec.settings``), or build it with other sources and sinks via
:func:`build_flow` (tests, ``streamrec eval``).

events ─► parse ─► bad ─► dead letters (Redis stream, Kafka topic)
            │ ok, keyed by user
            ▼
          user step ──► item questions, keyed by item ─► item step ◄── catalog
            │                                              │ answers, keyed by rank shard
            ▼ rank request, keyed by rank shard            ▼
          rank step ◄──────────────────────────────────────┘
            ▲ the rules in force, to every rank shard
          controls step ◄── rule records (controls topic)
            │ recommendation updates        │ attributed outcomes (impressions, clicks, sales)
            ▼                               ▼
          Redis sink ◄─────────────────── metrics windows (5 min, 1 h, event time)
          (recs stream, latest list, profile, metrics)
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import time
from typing import Callable

# Before numpy loads: one BLAS thread. Scoring does small matrix-vector products on
# one Bytewax worker thread; OpenBLAS's helper threads only spin on the other core
# (measured on Taobao: 2,208 -> 1,469 us CPU per event, same events/s), stealing it
# from the broker, Redis and the other worker process. Set the variable to override.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import bytewax.operators as op
from bytewax.dataflow import Dataflow, Stream
from bytewax.outputs import Sink

from connectors.catalog_file import catalog_file_envelopes
from connectors.kafka_io import kafka_dead_letters, kafka_envelopes, source_config
from connectors.redis_sink import RedisSink
from connectors.topics import ensure_topics
from dataflows.routing import bundled, features_to, not_of_types, of_types, routed, unkeyed
from operators.control_step import ControlLogic, ControlStepConfig
from operators.item_step import ItemLogic, ItemStepConfig
from operators.metrics_step import metrics_windows
from models.attribution import Outcome
from models.experiments import parse_experiment
from operators.messages import (
    DeadLetter, ForgetUser, ItemFeatures, ItemQuery, PopularityReport, RankRequest,
    RulesUpdate, RulesWrite, SegmentHit, Feedback,
)
from operators.parse import EventParser, parse_catalog, parse_control
from operators.rank_step import RankLogic, RankStepConfig
from operators.trend_step import TrendLogic, TrendStepConfig
from operators.user_step import UserLogic, UserStepConfig
from models.profile import ProfileConfig
from models.ranking import RankConfig
from streamrec.settings import Settings

__all__ = ["build_flow", "recovery_requested", "step_configs", "wire"]

log = logging.getLogger("streamrec")


def step_configs(
    s: Settings,
) -> tuple[UserStepConfig, ItemStepConfig, RankStepConfig, TrendStepConfig]:
    profile = ProfileConfig(
        long_half_life=s.long_half_life,
        session_half_life=s.session_half_life,
        session_gap=s.session_gap,
        max_recent_items=s.max_recent_items,
        max_categories=s.max_categories,
        dedupe_window=s.max_dedupe_ids,
        max_events_per_minute=s.max_events_per_minute,
        event_weights=dict(s.event_weights),
    )
    user = UserStepConfig(profile=profile, rank_shards=s.rank_shards, query_items=s.query_items,
                          write_profiles=s.write_profiles, trend_shards=s.trend_shards,
                          covis_window=s.covis_window, backward_weight=s.backward_weight,
                          conflate=s.conflate,
                          anchor_decay=s.anchor_decay, session_knn=s.knn_sessions > 0,
                          attribution=s.attribution)
    item = ItemStepConfig(covis_half_life=s.covis_half_life,
                          popularity_half_life=s.trending_half_life,
                          max_neighbours=s.max_neighbours, answer_neighbours=s.answer_neighbours,
                          rank_shards=s.rank_shards, trend_shards=s.trend_shards,
                          knn_sessions=s.knn_sessions,
                          max_fresh_per_minute=s.max_fresh_per_item_minute)
    ranking = RankConfig(k=s.top_k, repeat_policy=s.repeat_policy, diversity=s.diversity,
                         max_per_category=s.max_per_category, repeat_factor=s.repeat_factor,
                         w_category=s.w_category, w_session=s.w_session, w_seen=s.w_seen,
                         session_decay=s.session_decay,
                         w_content=s.w_content, w_mf=s.w_mf,
                         learn_blend=s.learn_blend, learning_rate=s.blend_learning_rate,
                         feedback_negatives=s.feedback_negatives, w_segment=s.w_segment,
                         w_trending=s.w_trending, candidates_per_category=s.category_candidates,
                         new_item_slots=s.new_item_slots, fatigue=s.impression_fatigue)
    rank = RankStepConfig(ranking=ranking, trending_half_life=s.trending_half_life,
                          conflate=s.conflate, model_version=s.model_version,
                          content_search_window=s.content_search_window,
                          new_item_window=s.new_item_window,
                          experiment=parse_experiment(s.experiment),
                          attribution=s.attribution,
                          attribution_window=s.attribution_window)
    trend = TrendStepConfig(half_life=s.trending_half_life, rank_shards=s.rank_shards)
    return user, item, rank, trend


def _built(step: str, make, observe):
    """The logic builder of ``step``, its logic wrapped by ``observe`` when given."""
    if observe is None:
        return make
    return lambda resume: observe(step, make(resume))


def wire(
    flow: Dataflow,
    envelopes: Stream,
    catalog: Stream | None,
    settings: Settings,
    *,
    now: Callable[[], float] | None = None,
    snapshots: bool = True,
    observe: Callable[[str, object], object] | None = None,
    controls: Stream | None = None,
) -> tuple[Stream, Stream]:
    """Add the recommend steps to ``flow``.

    ``controls`` carries merchandising rule records (``models.rules``), ``catalog`` the
    catalog records; either may be None.

    Returns ``(outputs, dead_letters)``: outputs are RecUpdate, ProfileWrite, EraseUser,
    RulesWrite, Outcome and MetricsWrite messages for a sink; dead letters are DeadLetter
    messages.

    ``snapshots=False`` when the flow runs without recovery: Bytewax asks every key a
    batch touched for a snapshot at each epoch end whether or not recovery is on, and
    pickling a rank shard's state (trending, vector index, models) every epoch is pure
    cost when nothing stores it.

    ``observe(step, logic)`` may wrap each stateful step's logic (``"user"``, ``"item"``,
    ``"trend"``, ``"rank"``, ``"controls"``) to watch its batches from outside, as a lock-step replay
    does (``evaluation.observe``); what a wrapper adds to a user step's output goes to
    the sink.
    """
    configs = step_configs(settings)
    if not snapshots:
        configs = tuple(dataclasses.replace(c, snapshots=False) for c in configs)
    user_cfg, item_cfg, rank_cfg, trend_cfg = configs
    parser = EventParser.from_settings(settings, now)
    parsed = op.map("parse", envelopes, parser)
    branch = op.branch("valid", parsed, lambda x: not isinstance(x, DeadLetter))
    dead = [branch.falses]
    by_user = op.key_on("key_user", branch.trues, lambda pair: pair[0].user_id)
    user_out = op.stateful_batch(
        "user", by_user, _built("user", lambda resume: UserLogic(user_cfg, resume), observe)
    )
    user_msgs = unkeyed("user_msgs", user_out)

    queries = of_types("item_queries", user_msgs, ItemQuery)
    to_item = [routed("route_item", queries)]
    if catalog is not None:
        cat_parsed = op.map("parse_catalog", catalog, parse_catalog)
        cat_branch = op.branch("valid_catalog", cat_parsed, lambda x: not isinstance(x, DeadLetter))
        dead.append(cat_branch.falses)
        to_item.append(cat_branch.trues)
    item_in = op.merge("item_in", *to_item) if len(to_item) > 1 else to_item[0]
    item_out = op.stateful_batch("item", item_in, _built("item", lambda resume: ItemLogic(item_cfg, resume), observe))
    item_msgs = unkeyed("item_msgs", item_out)
    item_split = op.branch("item_reports", item_msgs, lambda m: isinstance(m, PopularityReport))
    answers = item_split.falses  # answers, availability and catalog changes, for the rank shards
    features = of_types("catalog_features", answers, ItemFeatures)
    answers = not_of_types("answers", answers, ItemFeatures)
    shards = [f"rank-{s}" for s in range(settings.rank_shards)]
    bundles = op.flat_map_batch("features_to_shards", features, features_to(shards))

    hits = of_types("segment_hits", user_msgs, SegmentHit)
    trend_in = bundled("route_trend", op.merge("trend_merge", item_split.trues, hits))
    trend_out = op.stateful_batch("trend", trend_in, _built("trend", lambda resume: TrendLogic(trend_cfg, resume), observe))
    deltas = unkeyed("trend_msgs", trend_out)

    rank_bound = of_types("rank_msgs", user_msgs, (RankRequest, ForgetUser, Feedback))
    to_rank = [rank_bound, answers, bundles, deltas]
    to_sink = []
    if controls is not None:
        ctl_cfg = ControlStepConfig(rank_shards=settings.rank_shards, snapshots=snapshots)
        ctl_parsed = op.map("parse_controls", controls, parse_control)
        ctl_branch = op.branch("valid_controls", ctl_parsed, lambda x: not isinstance(x, DeadLetter))
        dead.append(ctl_branch.falses)
        ctl_out = op.stateful_batch("controls", ctl_branch.trues, _built(
            "controls", lambda resume: ControlLogic(ctl_cfg, resume), observe))
        ctl_msgs = op.key_rm("control_msgs", ctl_out)
        dead.append(op.filter("control_dead", ctl_msgs, lambda m: isinstance(m, DeadLetter)))
        to_rank.append(op.filter("rules_to_rank", ctl_msgs, lambda m: isinstance(m, RulesUpdate)))
        to_sink.append(op.filter("rules_to_sink", ctl_msgs, lambda m: isinstance(m, RulesWrite)))
    rank_in = bundled("route_rank", op.merge("rank_merge", *to_rank))
    rank_out = op.stateful_batch("rank", rank_in, _built("rank", lambda resume: RankLogic(rank_cfg, resume), observe))
    ranked = unkeyed("recs", rank_out)
    rank_split = op.branch("outcomes", ranked, lambda m: isinstance(m, Outcome))
    recs = rank_split.falses
    if settings.attribution:
        to_sink.append(rank_split.trues)  # the outcomes stream, for off-policy evaluation
        to_sink.append(metrics_windows(rank_split.trues, settings.metrics_lateness))

    sink_bound = not_of_types("user_outputs", user_msgs,
                               (ItemQuery, SegmentHit, RankRequest, ForgetUser, Feedback))
    outputs = op.merge("outputs", recs, sink_bound, *to_sink)
    dead_letters = op.merge("dead_letters", *dead) if len(dead) > 1 else dead[0]
    return outputs, dead_letters


def build_flow(
    settings: Settings,
    *,
    sink: Sink | None = None,
    kafka_dlq: bool = True,
    flow_id: str = "streamrec",
    snapshots: bool = True,
) -> Dataflow:
    """The production flow: Kafka (or RabbitMQ, ``STREAMREC_SOURCE``) in, Redis (and,
    with Kafka, the Kafka DLQ topic) out."""
    flow = Dataflow(flow_id)
    catalog_streams = []
    if settings.source == "rabbitmq":
        envs, errs, items = _rabbitmq_sources(flow, settings)
        catalog_streams += items
        kafka_dlq = False  # dead letters go to the Redis stream only
    else:
        cfg = source_config(settings.kafka_fetch_wait_ms, settings.kafka_config)
        envs, errs = kafka_envelopes("events_in", flow, brokers=settings.brokers,
                                     topic=settings.events_topic, source="events", config=cfg,
                                     batch_size=settings.kafka_batch_size)
        if settings.consume_items:
            items, item_errs = kafka_envelopes("items_in", flow, brokers=settings.brokers,
                                               topic=settings.items_topic, source="items",
                                               config=cfg, batch_size=settings.kafka_batch_size)
            catalog_streams.append(items)
            errs = op.merge("consumer_errors", errs, item_errs)
    if settings.catalog_file:
        catalog_streams.append(catalog_file_envelopes("catalog_file", flow, settings.catalog_file))
    catalog = None
    if catalog_streams:
        catalog = catalog_streams[0] if len(catalog_streams) == 1 else op.merge(
            "catalog", *catalog_streams)
    controls = None
    if settings.consume_controls and settings.source == "kafka":
        # The worker creates its (one-partition) controls topic when it is missing, so
        # turning rules on needs no other step; a broker that refuses says so here.
        ensure_topics(settings.kafka_bootstrap_servers, {settings.controls_topic: 1},
                      config=dict(settings.kafka_config))
        controls, ctl_errs = kafka_envelopes("controls_in", flow, brokers=settings.brokers,
                                             topic=settings.controls_topic, source="controls",
                                             config=cfg, batch_size=settings.kafka_batch_size)
        errs = op.merge("control_consumer_errors", errs, ctl_errs)
    outputs, dead = wire(flow, envs, catalog, settings, now=time.time, snapshots=snapshots,
                         controls=controls)
    if errs is not None:
        dead = op.merge("all_dead", dead, errs)
    redis_sink = sink or RedisSink(settings.redis_url, settings.prefix,
                                   recs_maxlen=settings.recs_maxlen,
                                   dlq_maxlen=settings.dlq_maxlen,
                                   payload_limit=settings.dlq_payload_limit,
                                   conflate=settings.conflate,
                                   timeout=settings.redis_timeout,
                                   retries=settings.redis_retries,
                                   retry_budget=settings.redis_retry_budget,
                                   outcomes_maxlen=settings.outcomes_maxlen)
    op.output("redis_out", op.merge("sink_in", outputs, dead), redis_sink)
    if kafka_dlq:
        kafka_dead_letters("dlq_kafka", dead, brokers=settings.brokers,
                           topic=settings.dlq_topic, config=dict(settings.kafka_config))
    return flow


def _rabbitmq_sources(flow: Dataflow, s: Settings) -> tuple[Stream, None, list[Stream]]:
    """(events, no consumer-error stream, [catalog]) from RabbitMQ queues."""
    from connectors.rabbitmq_io import rabbitmq_envelopes  # pika is an optional extra

    common = {"url": s.rabbitmq_url, "prefetch": s.rabbitmq_prefetch,
              "batch_size": s.rabbitmq_batch_size}
    envs = rabbitmq_envelopes("events_in", flow, queues=s.rabbitmq_events_queues,
                              source="events", consumers=s.rabbitmq_consumers_per_queue, **common)
    items = []
    if s.consume_items:
        items.append(rabbitmq_envelopes("items_in", flow, queues=[s.rabbitmq_items_queue],
                                        source="items", **common))
    return envs, None, items


def recovery_requested(argv: list[str] | None = None, environ=None) -> bool:
    """Will this worker run with recovery? Asked of Bytewax's own argument parser, so
    every spelling it accepts (``-r DIR``, ``--recovery-directory``, any unique prefix
    such as ``--r``, the ``BYTEWAX_RECOVERY_DIRECTORY`` variable, even empty) counts.

    Errs towards yes: when the flow was not started by ``python -m bytewax.run`` (another
    launcher may pass a recovery config of its own), or the arguments cannot be parsed.

    >>> run = "/venv/lib/python3.11/site-packages/bytewax/run.py"
    >>> recovery_requested([run, "dataflows.recommend", "-r", "state", "-s", "10", "-b", "0"], {})
    True
    >>> recovery_requested([run, "dataflows.recommend", "-w", "2"], {})
    False
    >>> recovery_requested(["my_launcher.py"], {})
    True
    """
    argv = sys.argv if argv is None else argv
    environ = os.environ if environ is None else environ
    if "BYTEWAX_RECOVERY_DIRECTORY" in environ:
        return True
    if not argv or not argv[0].replace("\\", "/").endswith("bytewax/run.py"):
        return True
    try:
        from bytewax.run import _create_arg_parser  # private, hence the fallback below

        args, _ = _create_arg_parser().parse_known_args(argv[1:])
        return args.recovery_directory is not None
    except (Exception, SystemExit):  # noqa: BLE001 - any doubt keeps snapshots on
        return True


def _flow_from_env() -> Dataflow:
    settings = Settings.from_env()
    from streamrec.logs import configure_logging
    from streamrec.settings import redact_url

    configure_logging(settings.log_format)
    snapshots = recovery_requested()
    log.info("streamrec worker: topics %s/%s, prefix %r, top-k %d, recovery %s",
             settings.events_topic, settings.items_topic, settings.prefix, settings.top_k,
             "on (state snapshots every epoch)" if snapshots else "off (no state snapshots)")
    # Values only of settings that are never secret; of the rest, the names.
    shown = {k: v for k, v in settings.kafka_config.items()
             if k in ("security.protocol", "sasl.mechanism", "sasl.mechanisms")}
    others = sorted(k for k in settings.kafka_config if k not in shown)
    if settings.source == "rabbitmq":
        log.info("rabbitmq %s queues %s/%s, redis %s", redact_url(settings.rabbitmq_url),
                 ",".join(settings.rabbitmq_events_queues), settings.rabbitmq_items_queue,
                 redact_url(settings.redis_url))
    else:
        log.info("kafka %s %s (also set: %s), redis %s", settings.kafka_bootstrap_servers,
                 shown, ", ".join(others) or "nothing", redact_url(settings.redis_url))
    flow = build_flow(settings, snapshots=snapshots)
    from connectors.ops_server import start_ops_server
    from streamrec.gc_tuning import tune_gc

    start_ops_server(settings, sys.argv, os.environ)
    tune_gc(settings.gc_threshold)
    return flow


def __getattr__(name: str):
    # `python -m bytewax.run dataflows.recommend` asks for `flow`: it is built on first
    # use, so importing this module (eval, tune, tests) neither reads the environment
    # nor configures logging nor logs a worker banner.
    if name == "flow":
        built = globals()["flow"] = _flow_from_env()
        return built
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
