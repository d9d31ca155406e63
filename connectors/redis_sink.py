"""Redis output: the recs stream, latest list and profile per user, dead letters, erasure.

One partition per worker, created in ``build()``: a client for the batches, each written
in one pipeline, and an erasure scanner (``connectors.erasure_scan``, a thread with a
client of its own). Latest-list and profile writes are guarded by the user's event
sequence number in a tiny Lua script, so a replay after a crash can never move them back
in time. Redis Cluster is not supported (the scripts touch several keys of a prefix).
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import orjson
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from connectors.rec_file_sink import list_items, rec_record
from connectors.guard_counts import GUARD_COUNTS
from connectors.erasure_scan import (  # erase_user ... re-exported: they were defined here
    ERASURES_MAXLEN, RECEIPT_PENDING_TTL, ErasureScanner, confirm_erasure, erase_user,
    mark_erasure, note_field,
)
from connectors.recs_index import RECS_INDEX_SLACK, RecsIndex
from connectors.redis_retry import OutageGuard, RetryTally, sink_client
from models.attribution import Outcome
from operators.messages import (
    DeadLetter, EraseUser, MetricsWrite, ProfileWrite, RecUpdate, RulesWrite,
)
from streamrec.metrics import (
    DEAD_LETTERS, EVENT_TO_REDIS, HEALTH, LISTS_WRITTEN, PROFILES_WRITTEN, REDIS_UP,
    SINK_BATCH_SIZE, SINK_WRITE_SECONDS,
)

__all__ = ["RedisSink", "RedisKeys", "encode_rec", "erase_user", "confirm_erasure",
           "ERASURES_MAXLEN", "RECEIPT_PENDING_TTL"]

log = logging.getLogger(__name__)

# KEYS[1] = key, ARGV[1] = seq, ARGV[2] = JSON with a top-level "seq". The sink writes
# "seq" first, so the guard reads it off the value's start; a value written otherwise
# (by an older release) is decoded whole.
_GUARDED_SET = """
local cur = redis.call('GET', KEYS[1])
if cur then
  local seq = tonumber(string.match(cur, '^{"seq":(%d+)[,}]'))
  if not seq then
    local ok, obj = pcall(cjson.decode, cur)
    if ok and type(obj) == 'table' and obj.seq then seq = tonumber(obj.seq) end
  end
  if seq and seq > tonumber(ARGV[1]) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[2])
return 1
"""


# How long closed metrics windows stay in Redis (seconds).
METRICS_TTL = {"5m": 7 * 24 * 3600, "1h": 90 * 24 * 3600}


class RedisKeys:
    """Key names of the output contract."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.recs = f"{prefix}:recs"
        self.dlq = f"{prefix}:dlq"
        self.erasures = f"{prefix}:erasures"
        self.erasing = f"{prefix}:erasing"  # hash: erasures whose stream scan is not done
        self.rules = f"{prefix}:rules"  # hash: rule id -> rule record (JSON)
        self.guarded = f"{prefix}:guarded"  # hash: guard reason -> events kept from learning
        self.outcomes = f"{prefix}:outcomes"  # stream: attributed outcomes (no user ids)

    def latest(self, user_id: str) -> str:
        return f"{self.prefix}:latest:{user_id}"

    def profile(self, user_id: str) -> str:
        return f"{self.prefix}:profile:{user_id}"

    def metrics(self, window: str, start: float) -> str:
        """Hash of one closed metrics window: "variant|strategy|segment" -> JSON counts."""
        return f"{self.prefix}:metrics:{window}:{int(start)}"

    def erasure(self, user_id: str, receipt: str) -> str:
        """Which parts of a user's erasure with ``receipt`` have been executed."""
        return f"{self.prefix}:erasure:{user_id}:{receipt}"


def encode_rec(rec: RecUpdate, emitted_at: float,
               items: bytes | None = None) -> dict[str, bytes | str]:
    """Stream-entry fields of one recommendation update (the output contract);
    ``items``: the list's items as JSON, when already encoded."""
    return {
        "user_id": rec.user_id,
        "trigger_event_id": rec.trigger_event_id,
        "event_ts": repr(rec.event_ts),
        "emitted_at": repr(emitted_at),
        "items": items if items is not None else orjson.dumps(list_items(rec)),
        "strategy": rec.strategy,
        "model_version": rec.model_version,
        "seq": str(rec.seq),
        "ingested_at": repr(rec.ingested_at) if rec.ingested_at is not None else "",
        "rec_id": rec.rec_id,
        "variant": rec.variant,
        "propensity": repr(rec.propensity),
    }


def latest_json(rec: RecUpdate, emitted_at: float, items: bytes | None = None) -> bytes:
    """The latest-list value: ``seq`` first (read by the replay guard, ``_GUARDED_SET``),
    then the output-contract record; ``items`` as in :func:`encode_rec`."""
    listed = orjson.Fragment(items) if items is not None else None
    return orjson.dumps({"seq": rec.seq, **rec_record(rec, emitted_at, listed)})


@dataclass
class _Written:
    """What a batch wrote, for the metrics (recorded once Redis accepted it)."""

    lists: int = 0
    profiles: int = 0
    ingested: list[float] = field(default_factory=list)
    reasons: dict[str, int] = field(default_factory=dict)


def _segments(items: list) -> list[list]:
    """Split a batch at erasures: each segment is one pipeline, or one EraseUser.

    A segment is the unit a Redis outage retries, so a retry never repeats the
    pipelines of segments Redis already accepted.
    """
    out: list[list] = [[]]
    for item in items:
        if isinstance(item, EraseUser):
            out.append([item])
            out.append([])
        else:
            out[-1].append(item)
    return [seg for seg in out if seg]


class _RedisPartition(StatelessSinkPartition):
    def __init__(self, url: str, keys: RedisKeys, recs_maxlen: int, dlq_maxlen: int,
                 payload_limit: int, conflate: bool, now: Callable[[], float],
                 timeout: float, retries: int, retry_budget: float,
                 outcomes_maxlen: int = 1_000_000, resume_erasures: bool = True) -> None:
        self.retried = RetryTally()  # the client's own retries (see _write_pipeline)
        self.client = sink_client(url, timeout, retries, self.retried)
        self.outcomes_maxlen = outcomes_maxlen
        self.guard = OutageGuard(url, retry_budget, client=self.client)
        self.keys = keys
        self.recs_maxlen = recs_maxlen
        self.dlq_maxlen = dlq_maxlen
        self.payload_limit = payload_limit
        self.conflate = conflate
        self.now = now
        # recs_maxlen + slack: an entry older than the last that many tracked is trimmed.
        self.index = RecsIndex(recs_maxlen + RECS_INDEX_SLACK)
        self.scanner = ErasureScanner(
            lambda: sink_client(url, timeout, retries), keys, url,
            confirm=lambda client, erase: confirm_erasure(client, keys, erase, now())
        ).start(resume=resume_erasures)

    def write_batch(self, items: list) -> None:
        started = time.monotonic()
        total = _Written()
        for segment in _segments(items):
            if isinstance(segment[0], EraseUser):
                self._erase(segment[0])
                continue
            done = self.guard.run(lambda: self._write_pipeline(segment))
            total.lists += done.lists
            total.profiles += done.profiles
            total.ingested += done.ingested
            for reason, n in done.reasons.items():
                total.reasons[reason] = total.reasons.get(reason, 0) + n
        self._record(len(items), total, started)
        guarded = GUARD_COUNTS.take()
        if guarded:
            def count() -> None:
                pipe = self.client.pipeline(transaction=False)
                for reason, n in guarded.items():
                    pipe.hincrby(self.keys.guarded, reason, n)
                pipe.execute()
            self.guard.run(count)

    def _erase(self, erase: EraseUser) -> None:
        """The profile key goes at once; the other parts delete the user's keys and note
        the erasure at once, and the scanner thread removes their stream entries
        (``connectors.erasure_scan``): by id for the lists this partition wrote
        (``connectors.recs_index``), by a scan of the streams for the rest; a scan of a
        long stream would hold every other user's lists for tens to hundreds of
        milliseconds."""
        if erase.part == "profile":
            self.guard.run(lambda: erase_user(self.client, self.keys, erase.user_id,
                                              part="profile"))
            log.info("erased a user (profile)")
            if erase.receipt is not None and self.guard.run(
                    lambda: confirm_erasure(self.client, self.keys, erase, self.now())):
                log.info("erasure confirmed on %s", self.keys.erasures)
            return
        # The token is drawn before the call: a retry after a lost reply finds its note.
        field = note_field(erase, uuid.uuid4().hex)
        ends = self.guard.run(lambda: mark_erasure(self.client, self.keys, erase, field))
        # The user's lists are all written by this partition (the one of the worker that
        # ranks them): the ones it knows go by id, no scan of the stream.
        known = (self.index.take(erase.user_id), self.index.bound())
        self.scanner.submit(erase, field, *ends, known=known)

    def wait_erasures(self, timeout: float | None = None) -> bool:
        """Block until the erasures written so far are complete (stream entries gone,
        receipts written); False on timeout."""
        return self.scanner.wait(timeout)

    def _write_pipeline(self, items: list) -> _Written:
        """One pipeline: stream entries, then the guarded latest lists and profiles."""
        keys = self.keys
        pipe = self.client.pipeline(transaction=False)
        latest: dict[str, tuple[RecUpdate, bytes]] = {}  # a user's last list, its items JSON
        profiles: dict[str, ProfileWrite] = {}
        written = _Written()
        emitted_at = self.now()
        rules: RulesWrite | None = None
        rec_at: list[int] = []  # the recs XADDs' places in the pipeline, and their users
        rec_users: list[str] = []
        for item in items:
            if isinstance(item, RecUpdate):
                rec_at.append(len(pipe))
                rec_users.append(item.user_id)
                listed = orjson.dumps(list_items(item))  # shared with the latest value
                pipe.xadd(keys.recs, encode_rec(item, emitted_at, listed),
                          maxlen=self.recs_maxlen, approximate=True)
                written.lists += 1
                if item.ingested_at is not None:
                    written.ingested.append(item.ingested_at)
                prev = latest.get(item.user_id)
                if prev is None or prev[0].seq <= item.seq:
                    latest[item.user_id] = (item, listed)
            elif isinstance(item, ProfileWrite):
                profiles[item.user_id] = item
            elif isinstance(item, DeadLetter):
                pipe.xadd(keys.dlq, dead_letter_fields(item, self.payload_limit, emitted_at),
                          maxlen=self.dlq_maxlen, approximate=True)
                written.reasons[item.reason] = written.reasons.get(item.reason, 0) + 1
            elif isinstance(item, RulesWrite):
                if rules is None or rules.seq < item.seq:
                    rules = item
            elif isinstance(item, Outcome):
                pipe.xadd(keys.outcomes, outcome_fields(item), maxlen=self.outcomes_maxlen,
                          approximate=True)
            elif isinstance(item, MetricsWrite):
                key = keys.metrics(item.window, item.start)
                if item.rows:
                    pipe.hset(key, mapping={k: orjson.dumps(v) for k, v in item.rows.items()})
                    pipe.expire(key, METRICS_TTL.get(item.window, METRICS_TTL["1h"]))
            else:
                msg = f"Redis sink got an unexpected {type(item).__name__}"
                raise TypeError(msg)
        # EVAL with the script's text, not a registered script: redis-py checks that a
        # pipeline's registered scripts exist (SCRIPT EXISTS) before each execute, one
        # more round trip per batch (3% of the worker at 1,000 events/s). Redis caches
        # the script by its hash; the text is 255 bytes.
        for rec, listed in latest.values():
            pipe.eval(_GUARDED_SET, 1, keys.latest(rec.user_id), rec.seq,
                      latest_json(rec, emitted_at, listed))
        for p in profiles.values():
            body = {"seq": p.seq}  # first: the guard reads it off the start
            body.update(p.profile)
            body["seq"] = p.seq
            pipe.eval(_GUARDED_SET, 1, keys.profile(p.user_id), p.seq, orjson.dumps(body))
        written.profiles = len(profiles)
        if rules is not None:  # one writer (the controls step): the latest set replaces all
            pipe.delete(keys.rules)
            if rules.records:
                pipe.hset(keys.rules, mapping={r["rule_id"]: orjson.dumps(r) for r in rules.records})
        if len(pipe):
            retried = self.retried.count
            try:
                replies = pipe.execute()
            except BaseException:
                self.index.lost()  # Redis may hold entries whose ids never came back
                raise
            if self.retried.count != retried:
                # redis-py sent the pipeline again after an error: the first attempt may
                # have been applied too, its ids unknown.
                self.index.lost()
            if rec_at:
                self.index.added(rec_users, [replies[i] for i in rec_at])
        return written

    def _record(self, n_items: int, written: _Written, started: float) -> None:
        """Metrics of one written batch: a few calls per batch, none per item."""
        done = self.now()
        if written.lists:
            LISTS_WRITTEN.inc(written.lists)
        if written.profiles:
            PROFILES_WRITTEN.inc(written.profiles)
        if written.ingested:
            EVENT_TO_REDIS.observe_many(done - np.asarray(written.ingested))
        for reason, n in written.reasons.items():
            DEAD_LETTERS.add(reason, n)
        SINK_BATCH_SIZE.observe(n_items)
        SINK_WRITE_SECONDS.observe(time.monotonic() - started)
        REDIS_UP.set(1)
        HEALTH.batch_written()

    def close(self) -> None:
        self.scanner.close()
        self.client.close()


def outcome_fields(o: Outcome) -> dict[str, str]:
    """Stream-entry fields of one attributed outcome (no user id: lists are named by
    ``rec_id``, a hash)."""
    return {"kind": o.kind, "rec_id": o.rec_id, "variant": o.variant, "strategy": o.strategy,
            "segment": o.segment or "", "ts": repr(o.ts), "position": str(o.position),
            "value": repr(o.value), "propensity": repr(o.propensity)}


def dead_letter_fields(dl: DeadLetter, limit: int, now: float) -> dict:
    payload = dl.payload[:limit]
    fields = {
        "reason": dl.reason,
        "detail": dl.detail[:200],
        "payload": payload,
        "payload_bytes": str(len(dl.payload)),
        "source": dl.source,
        "received_at": repr(now),
    }
    # Lets erasure find a user's dead letters; only when the payload names one plainly.
    try:
        raw = orjson.loads(dl.payload)
        uid = raw.get("user_id") if isinstance(raw, dict) else None
        if isinstance(uid, str) and 0 < len(uid) <= 256:
            fields["user_id"] = uid
    except orjson.JSONDecodeError:
        pass
    return fields


class RedisSink(DynamicSink):
    """Bytewax sink for :mod:`operators.messages` outputs (one partition per worker)."""

    def __init__(self, url: str, prefix: str, *, recs_maxlen: int = 100_000,
                 dlq_maxlen: int = 100_000, payload_limit: int = 2048, conflate: bool = True,
                 now: Callable[[], float] = time.time, timeout: float = 5.0, retries: int = 3,
                 retry_budget: float = 300.0, outcomes_maxlen: int = 1_000_000) -> None:
        self.url = url
        self.outcomes_maxlen = outcomes_maxlen
        self.keys = RedisKeys(prefix)
        self.recs_maxlen = recs_maxlen
        self.dlq_maxlen = dlq_maxlen
        self.payload_limit = payload_limit
        self.conflate = conflate
        self.now = now
        self.timeout = timeout
        self.retries = retries
        self.retry_budget = retry_budget

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _RedisPartition:
        HEALTH.sinks_built += 1
        return _RedisPartition(self.url, self.keys, self.recs_maxlen, self.dlq_maxlen,
                               self.payload_limit, self.conflate, self.now, self.timeout,
                               self.retries, self.retry_budget, self.outcomes_maxlen,
                               resume_erasures=worker_index == 0)  # one worker takes them up


