"""The user step: dedupe, guards, consent and erasure, decayed profile, and the
scatter of one event into item questions plus one rank request.

Keyed by user, so one user's events are handled in order by one worker.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from dataclasses import dataclass, field
from typing import Iterable

from bytewax.operators import StatefulBatchLogic

from models.events import Event, engagement, erasure_receipt
from models.profile import ProfileConfig, UserProfile
from streamrec.metrics import GUARDED, USER_KEYS
from operators.messages import (
    EraseUser, Feedback, ForgetUser, ItemQuery, ProfileWrite, RankRequest, SegmentHit,
    rank_shard, trend_shard,
)

__all__ = ["UserStepConfig", "UserLogic", "scatter", "with_request"]


@dataclass(frozen=True)
class UserStepConfig:
    profile: ProfileConfig = field(default_factory=ProfileConfig)
    rank_shards: int = 8
    query_items: int = 3  # recent items whose followers are asked for
    covis_window: int = 5  # earlier session items that learn "this came after you"
    anchor_decay: float = 0.5
    history_anchor_weight: float = 0.3  # anchors from earlier sessions count less
    backward_weight: float = 0.0  # the current item also learns what came before it
    write_profiles: bool = True
    conflate: bool = False  # one rank request per user per batch (see UserLogic.on_batch)
    trend_shards: int = 4
    segment_events: int = 50  # a user's first N item events teach segment popularity
    cold_events: int = 2  # up to this many item events a user counts as cold
    session_candidates: int = 20  # latest session items the ranker may show again
    session_knn: bool = True  # ask anchors for similar sessions (models.sessionknn)
    snapshots: bool = True  # False when recovery is off (see dataflows.recommend)
    attribution: bool = True  # impressions, clicks and conversions go to the rank shard


_SESSION_SALT = os.urandom(16)  # per process: item-side session keys link to no user


def session_hash(session_id: str) -> int:
    """A session's key on the item side: salted, so it cannot be traced back to a user.

    The caller hashes user, session id and session start together: a user erased and
    back again (session numbers restart) gets new keys, and two users' equal session
    ids never share one."""
    digest = hashlib.blake2b(session_id.encode(), digest_size=8, key=_SESSION_SALT).digest()
    return int.from_bytes(digest, "little") or 1


_ACTIONS = {"click": "click", "view": "click", "add_to_cart": "cart", "purchase": "purchase"}


def feedback(event: Event, shards: int) -> Feedback | None:
    """The event's message for attribution (``models.attribution``), if it is about a
    list: an impression naming one, a click or view from one, any cart or purchase."""
    ctx = event.context
    rec_id = ctx.get("rec_id") if ctx else None
    if not isinstance(rec_id, str) or not 0 < len(rec_id) <= 128:
        rec_id = None
    etype = event.type
    if etype == "impression":
        if rec_id is None:
            return None
        items = ctx.get("items")
        return Feedback(rank_shard(event.user_id, shards), event.user_id, "impression", rec_id,
                        None, items[:200] if items else None, event.ts, None)
    kind = _ACTIONS.get(etype)
    if kind is None or event.item_id is None or (kind == "click" and rec_id is None):
        return None
    return Feedback(rank_shard(event.user_id, shards), event.user_id, kind, rec_id,
                    event.item_id, None, event.ts, event.value)


def _query(queries: dict[str, ItemQuery], item_id: str, profile: UserProfile, ts: float,
           shard: str, session_key: int) -> ItemQuery:
    """The event's question to ``item_id`` (one per item and event)."""
    q = queries.get(item_id)
    if q is None:
        q = ItemQuery(item_id, profile.user_id, profile.seq, ts, shard, 0.0, [], 0.0, None,
                      session_key, None, profile.first_ts)
        queries[item_id] = q
    return q


def _session_key(profile: UserProfile, cfg: UserStepConfig) -> int:
    sid = profile.session_id
    if not sid or not cfg.session_knn:
        return 0
    return session_hash(f"{profile.user_id}\0{sid}\0{profile.session_start}")


def scatter(profile: UserProfile, event: Event, prev_session: list[str], cfg: UserStepConfig,
            ingested_at: float | None, ask: bool = True) -> list:
    """Messages for one applied event: item updates, and (``ask``) the item questions
    and the rank request.

    ``ask=False`` leaves the questions and the request out: under conflation only a
    batch's last event of a user asks (see :func:`with_request`), and the request was
    most of the cost of an event.
    """
    shard = rank_shard(profile.user_id, cfg.rank_shards)
    item = event.item_id
    ts = event.ts
    weight = engagement(event.type, event.value, cfg.profile.event_weights) if item else 0.0
    queries: dict[str, ItemQuery] = {}
    session_key = _session_key(profile, cfg)

    # Learn: the current item followed each of the last few session items (1/distance).
    new_position = item is not None and (not prev_session or prev_session[-1] != item)
    if new_position and event.type not in ("impression", "remove_from_cart"):
        window = [p for p in prev_session if p != item][-cfg.covis_window :]
        current = _query(queries, item, profile, ts, shard, session_key)
        for distance, prev in enumerate(reversed(window), start=1):
            _query(queries, prev, profile, ts, shard, session_key).followers.append(
                (item, 1.0 / distance))
            if cfg.backward_weight > 0.0:
                current.followers.append((prev, cfg.backward_weight / distance))
    if item is not None:
        q = _query(queries, item, profile, ts, shard, session_key)
        q.interaction = max(weight, 0.0)
        q.category = event.category
    out: list
    if ask:
        request = _ask(queries, profile, event, cfg, ingested_at, shard, session_key, weight)
        out = list(queries.values())
        out.append(request)
        segment = request.segment
    else:
        out = list(queries.values())
        segment = profile.segment()
    if segment and item and weight > 0 and profile.seq <= cfg.segment_events:
        out.append(SegmentHit(trend_shard(segment, cfg.trend_shards), segment, item, weight, ts))
    return out


def with_request(msgs: list, profile: UserProfile, event: Event, cfg: UserStepConfig,
                 ingested_at: float | None) -> list:
    """``msgs`` of ``scatter(..., ask=False)`` as ``scatter(...)`` would have sent them:
    the profile must not have learned from anything since ``event``."""
    queries = {m.route: m for m in msgs if type(m) is ItemQuery}
    rest = [m for m in msgs if type(m) is not ItemQuery]
    weight = (engagement(event.type, event.value, cfg.profile.event_weights)
              if event.item_id else 0.0)
    request = _ask(queries, profile, event, cfg, ingested_at,
                   rank_shard(profile.user_id, cfg.rank_shards), _session_key(profile, cfg),
                   weight)
    return [*queries.values(), request, *rest]


def _ask(queries: dict[str, ItemQuery], profile: UserProfile, event: Event,
         cfg: UserStepConfig, ingested_at: float | None, shard: str,
         session_key: int, weight: float) -> RankRequest:
    """Ask the followers of the most recent items (the newest weighted most, into
    ``queries``) and build the rank request that waits for their answers (``weight``:
    the event's engagement)."""
    item = event.item_id
    ts = event.ts
    session = profile.session_items  # a new list, built from the profile's compact form
    anchors = list(reversed(session[-cfg.query_items :]))
    weights = [cfg.anchor_decay**i for i in range(len(anchors))]
    if len(anchors) < cfg.query_items:
        for old in reversed(profile.recent_items):
            if len(anchors) >= cfg.query_items:
                break
            if old not in anchors:
                weights.append(cfg.history_anchor_weight * cfg.anchor_decay ** len(anchors))
                anchors.append(old)
    # Session-kNN context: the session's items, the i-th of n weighing i/n (V-SKNN).
    context = ([(it, (i + 1) / len(session)) for i, it in enumerate(session)]
               if session_key and session else None)
    for anchor, w in zip(anchors, weights):
        q = _query(queries, anchor, profile, ts, shard, session_key)
        q.anchor_weight = w
        q.context = context
    expected = sum(1 for q in queries.values() if q.anchor_weight > 0.0)
    history = profile.item_events()
    return RankRequest(
        route=shard,
        user_id=profile.user_id,
        seq=profile.seq,
        ts=ts,
        event_id=event.event_id,
        event_type=event.type,
        ingested_at=ingested_at,
        expected=expected,
        item_id=item,
        interaction=max(weight, 0.0),
        categories=profile.top_categories(4, ts),
        session_categories=profile.session_top_categories(3, ts),
        preferences=profile.preferences,
        segment=profile.segment(),
        seen=session[-cfg.session_candidates :],
        excluded=list(profile.purchased),
        seen_filter=profile.seen_filter(),
        cold=history <= cfg.cold_events,
        history=history,
        life=profile.first_ts,
        page_category=_page_category(event.context),
        page=_text(event.context.get("page")) if event.context else None,
    )


def _conflate(scattered: list[list]) -> list:
    """Merge one batch of a user's scattered events into one round of messages.

    Every co-visitation update and popularity increment is kept (merged per item), but
    only the last event asks questions and gets a ranking: its list is the one that
    matters, and under load this cuts item answers and rankings to one per user per
    batch. Used only when updates are conflated anyway (production, not evaluation).
    """
    last = scattered[-1]
    request = next(m for m in last if isinstance(m, RankRequest))
    merged: dict[str, ItemQuery] = {}
    extra: list = []
    for msgs in scattered:
        is_last = msgs is last
        for m in msgs:
            if isinstance(m, ItemQuery):
                q = merged.get(m.route)
                if q is None:
                    q = merged[m.route] = ItemQuery(m.route, m.user_id, request.seq, request.ts,
                                                    m.reply_to, 0.0, [], 0.0, None, m.session_key,
                                                    None, request.life)
                q.followers.extend(m.followers)
                q.interaction += m.interaction
                q.category = m.category or q.category
                if is_last:
                    q.anchor_weight = m.anchor_weight
                    q.context = m.context
                    q.session_key = m.session_key
            elif isinstance(m, SegmentHit):
                extra.append(m)
    request.expected = sum(1 for q in merged.values() if q.anchor_weight > 0.0)
    return [*merged.values(), request, *extra]


class UserLogic(StatefulBatchLogic):
    """Per-user state machine around :class:`UserProfile`."""

    def __init__(self, cfg: UserStepConfig, resume: bytes | None) -> None:
        self.cfg = cfg
        # The builder does not get the key: a new profile is named by its first event.
        self.profile: UserProfile | None = pickle.loads(resume) if resume is not None else None
        USER_KEYS.inc()

    def on_batch(self, values: list) -> tuple[Iterable, bool]:
        out: list = []
        scattered: list[list] = []
        if self.profile is None:
            self.profile = UserProfile(values[0][0].user_id)
        self.user_id = self.profile.user_id
        profile = self.profile
        write = False
        last = None  # the last applied event and its arrival
        for event, ingested_at in values:
            if event.type == "erase":
                out.extend(self._forget(profile, scattered, erasure_receipt(event)))
                self.profile = profile = UserProfile(self.user_id)
                write = False
                continue
            if event.type == "consent" or event.consent is not None:
                granted = (event.value == 1.0) if event.type == "consent" else bool(event.consent)
                if not granted:
                    # Withdrawal erases what we know; only the refusal itself is kept.
                    out.extend(self._forget(profile, scattered))
                    self.profile = profile = UserProfile(self.user_id)
                    profile.consent = False
                    write = False
                    continue
                profile.consent = True
                if event.type == "consent":
                    continue
            if not profile.consent:
                continue
            prev_session = profile.session_items  # a copy: apply() does not change it
            session_n = profile.session_n
            status = profile.apply(event, self.cfg.profile, ingested_at)
            if status != "applied":
                GUARDED.add(status)
                continue
            if profile.session_n != session_n:
                prev_session = []  # a new session: no sequence learned across the gap
            # Conflated, only the batch's last event asks (with_request, below).
            scattered.append(scatter(profile, event, prev_session, self.cfg, ingested_at,
                                     ask=not self.cfg.conflate))
            last = (event, ingested_at)
            write = True
            if self.cfg.attribution:
                fb = feedback(event, self.cfg.rank_shards)
                if fb is not None:
                    out.append(fb)
        if scattered and self.cfg.conflate:
            event, ingested_at = last
            scattered[-1] = with_request(scattered[-1], profile, event, self.cfg, ingested_at)
            if len(scattered) > 1:
                scattered = [_conflate(scattered)]
        for msgs in scattered:
            out.extend(msgs)
        if write and self.cfg.write_profiles:
            out.append(ProfileWrite(self.user_id, self.user_id, profile.seq, profile.to_json_dict()))
        if profile.seq == 0 and profile.consent:
            # Nothing learned (erased, or only duplicates): keep no state for this key.
            USER_KEYS.dec()
            return out, StatefulBatchLogic.DISCARD
        return out, StatefulBatchLogic.RETAIN

    def _forget(self, profile: UserProfile, scattered: list[list],
                receipt: str | None = None) -> list:
        """Erasure messages; drops what earlier events of this batch would have sent.

        Those messages are not out yet (they leave after the loop): sent after the
        erasure, a request of the old life would be ranked into the new one (a first
        event's request restarts the rank shard's sequence) or dropped without a trace.
        """
        scattered.clear()
        shard = rank_shard(self.user_id, self.cfg.rank_shards)
        return [EraseUser(self.user_id, self.user_id, "profile", receipt),
                ForgetUser(shard, self.user_id, profile.seq, profile.first_ts, receipt)]

    def snapshot(self) -> bytes | None:
        if not self.cfg.snapshots:
            return None  # recovery is off: nobody reads it
        # Bytes are immutable: the runtime may keep this while the profile moves on.
        return pickle.dumps(self.profile, protocol=pickle.HIGHEST_PROTOCOL)


def _text(value) -> str | None:
    return value[:256] if isinstance(value, str) and value else None


def _page_category(context: dict | None) -> str | None:
    """The category a list is restricted to: ``context.page_category``, else
    ``context.category`` (a category page); None for every other page."""
    if not context:
        return None
    return _text(context.get("page_category")) or _text(context.get("category"))
