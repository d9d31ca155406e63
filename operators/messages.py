"""Messages that travel between the steps of the recommend dataflow.

Each carries ``route``: the key of the step it goes to next (an item id for the item
step, a rank-shard key for the rank step, a user id for the sink). All are small,
slotted and picklable, since Bytewax serialises them between workers.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

__all__ = [
    "Envelope", "DeadLetter", "ItemQuery", "ItemAnswer", "RankRequest", "Availability",
    "ItemFeatures",
    "ForgetUser", "RecUpdate", "ProfileWrite", "EraseUser", "rank_shard", "trend_shard",
    "PopularityReport", "SegmentHit", "TrendDelta", "RuleChange", "RulesUpdate", "RulesWrite",
    "Feedback", "MetricsWrite", "BUNDLED_STEPS",
]


#: The steps that take their messages in bundles, a list per destination key and upstream
#: batch (``dataflows.routing.bundled``): their ``on_batch`` gets lists of messages.
BUNDLED_STEPS = frozenset({"trend", "rank"})


def _compact(cls):
    """Pickle as ``(cls, field values)``: these messages cross workers on every event, and
    the default slotted-dataclass pickle also writes every field name (2-4x the bytes and
    time, measured by the benchmark's profile)."""
    names = cls.__slots__

    def __reduce__(self):
        return (cls, tuple(getattr(self, n) for n in names))

    cls.__reduce__ = __reduce__
    return cls


def rank_shard(user_id: str, shards: int) -> str:
    """Stable shard key of a user's ranking state (same on every process and restart)."""
    return f"rank-{zlib.crc32(user_id.encode()) % shards}"


def trend_shard(key: str, shards: int) -> str:
    """Stable key of the trending aggregator that owns ``key`` (an item or a segment)."""
    return f"trend-{zlib.crc32(key.encode()) % shards}"


@_compact
@dataclass(slots=True)
class PopularityReport:
    """From an item to its trending aggregator: my decayed popularity grew."""

    route: str
    item_id: str
    category: str | None
    popularity: float
    ts: float
    vector: bytes | None = None


@_compact
@dataclass(slots=True)
class SegmentHit:
    """From the user step: a user of ``segment`` engaged with ``item_id``."""

    route: str
    segment: str
    item_id: str
    weight: float
    ts: float


@_compact
@dataclass(slots=True)
class TrendDelta:
    """From a trending aggregator to every rank shard: new popularity values (a worker
    applies one copy of each broadcast for all its shards)."""

    route: str
    items: list  # [(item_id, category, popularity, ts, content vector)]
    segments: list  # [(segment, item_id, value, ts)]
    origin: str = ""  # the aggregator that sent it; with ``seq``, names the broadcast
    seq: int = 0  # its broadcasts are numbered 1, 2, ...; 0: unnumbered
    # Event time of the report that set the broadcast off: lists of events up to then
    # do not see it (else whether they did would depend on which message came first).
    release: float = 0.0


@_compact
@dataclass(slots=True)
class Envelope:
    """A raw event as it came in: bytes from Kafka, a line from a file, or a dict."""

    payload: object
    ingested_at: float | None = None  # when the event entered Kafka (create/append time)
    source: str = "events"


@_compact
@dataclass(slots=True)
class DeadLetter:
    reason: str
    payload: bytes
    source: str
    detail: str = ""
    route: str = "dlq"


@_compact
@dataclass(slots=True)
class ItemQuery:
    """To an item: learn from this event, and tell ``reply_to`` your best followers."""

    route: str  # item id
    user_id: str
    seq: int
    ts: float
    reply_to: str
    anchor_weight: float  # 0: update only, no answer expected
    followers: list  # [(item_id, weight)] items that came after this one
    interaction: float  # popularity increment for this item (0 when only an anchor)
    category: str | None
    session_key: int = 0  # salted hash of the session (session-kNN); 0: none
    context: list | None = None  # [(item, weight)] of the asking session, for session-kNN
    life: float | None = None  # the profile's first event time: which life of the user


@_compact
@dataclass(slots=True)
class ItemAnswer:
    route: str  # rank shard
    user_id: str
    seq: int
    item_id: str
    anchor_weight: float
    category: str | None
    popularity: float
    followers: list  # [(item_id, probability)]
    vector: bytes | None = None  # the item's content vector
    knn: list | None = None  # [(item_id, probability)] from similar sessions through this item
    life: float | None = None  # the asking profile's life (ItemQuery.life)


@_compact
@dataclass(slots=True)
class RankRequest:
    route: str  # rank shard
    user_id: str
    seq: int
    ts: float
    event_id: str
    event_type: str
    ingested_at: float | None
    expected: int  # how many ItemAnswers to wait for
    item_id: str | None
    interaction: float
    categories: list
    session_categories: list
    preferences: list | None
    segment: str | None
    seen: list
    excluded: list
    seen_filter: bytes | None = None
    cold: bool = False
    history: int = 0
    life: float | None = None  # the profile's first event time: which life of the user
    page_category: str | None = None  # context.page_category: the list shows that category only
    page: str | None = None  # context.page (pins can name pages)


@_compact
@dataclass(slots=True)
class Availability:
    route: str  # rank shard
    item_id: str
    available: bool


@_compact
@dataclass(slots=True)
class ItemFeatures:
    """From an item to every rank shard: its catalog features changed. They travel in
    :class:`FeaturesBundle` messages, one per rank shard and batch."""

    route: str  # rank shard ("" before bundling)
    item_id: str
    category: str | None
    vector: bytes | None
    price: float | None = None
    attributes: dict | None = None  # bounded, values as text (models.rules.item_attributes)
    new: bool = False  # the item's first catalog record, before any interaction with it


@_compact
@dataclass(slots=True)
class FeaturesBundle:
    """A batch's catalog feature changes, to one rank shard (one message per shard and
    batch instead of one per item and shard: a catalog of 80,000 items would otherwise
    send 640,000 messages to 8 shards). Every shard gets a copy; a worker applies the
    first copy it gets to the models its shards share and skips the others, recognised by
    ``origin`` and ``seq`` (as trend broadcasts)."""

    route: str  # rank shard
    features: list  # ItemFeatures, in the order the item step sent them
    origin: str = ""  # the sending worker's bundles ("": unnumbered, always applied)
    seq: int = 0  # increasing per origin


@_compact
@dataclass(slots=True)
class RuleChange:
    """A parsed merchandising rule record (``models.rules``), to the controls step."""

    route: str  # "controls": one key, rules are few and change rarely
    rule: object  # models.rules.Rule (action "delete" removes ``rule_id``)


@_compact
@dataclass(slots=True)
class RulesUpdate:
    """From the controls step to every rank shard: the whole rule set now in force."""

    route: str  # rank shard
    seq: int  # numbered 1, 2, ...: a worker keeps the highest it has seen
    rules: tuple  # of models.rules.Rule, in the order they were added


@_compact
@dataclass(slots=True)
class RulesWrite:
    """To the sink: the rules in force, for ``{prefix}:rules`` (``streamrec rules list``)."""

    route: str  # "rules"
    seq: int
    records: list  # JSON-ready rule records


@_compact
@dataclass(slots=True)
class ForgetUser:
    route: str  # rank shard
    user_id: str
    seq: int  # answers for requests up to this one may still arrive: drop them
    life: float | None = None  # the erased life; its messages still in flight are dropped
    receipt: str | None = None  # the erase event's receipt, passed on to EraseUser "outputs"


@_compact
@dataclass(slots=True)
class Feedback:
    """From the user step to the user's rank shard: an applied event that may be about a
    list (an impression, a click on a listed item, a cart or a purchase); the shard
    attributes it (``models.attribution``)."""

    route: str  # rank shard
    user_id: str
    kind: str  # "impression" | "click" | "cart" | "purchase"
    rec_id: str | None
    item_id: str | None
    items: list | None  # impression: the items on screen
    ts: float
    value: float | None


@dataclass(slots=True)
class MetricsWrite:
    """To the sink: the counts of one closed metrics window (``operators.metrics_step``)."""

    window: str  # "5m" | "1h"
    start: float  # window start, epoch seconds
    rows: dict  # "variant|strategy|segment" -> {"impressions": n, ...}


@_compact
@dataclass(slots=True)
class RecUpdate:
    route: str  # user id
    user_id: str
    seq: int
    trigger_event_id: str
    event_ts: float
    ingested_at: float | None
    items: list  # [(item_id, score)]
    strategy: str
    model_version: str
    reasons: list | None = None  # per item: {"kind": ..., "because"/"category": ...}
    rec_id: str = ""  # this list's id (impressions and clicks name it)
    variant: str = "default"  # the experiment variant that ranked it (models.experiments)
    propensity: float = 1.0  # the probability that variant was chosen for this list


@_compact
@dataclass(slots=True)
class ProfileWrite:
    route: str  # user id
    user_id: str
    seq: int
    profile: dict


@_compact
@dataclass(slots=True)
class EraseUser:
    """To the sink: delete what Redis holds about a user.

    Sent twice, each behind the writes it must follow on the same worker (writes of
    different workers are not ordered): ``part="profile"`` by the user step, after the
    user's profile writes; ``part="outputs"`` (latest list, recs stream entries, dead
    letters) by the user's rank shard, after every list it ranked for the old life and
    before any list of a new one.

    ``receipt`` (from the erase event, both parts carry it): the sink confirms the
    erasure on ``{prefix}:erasures`` once both parts have been executed, whichever
    worker ran them and in whichever order (the meeting point is in Redis).
    """

    route: str  # user id
    user_id: str
    part: str = "all"  # "profile" | "outputs" | "all"
    receipt: str | None = None
