"""The rank step's ranking calls: which shards of a worker wait for one, and the call.

A worker ranks the complete requests of all its rank shards together (see
:mod:`operators.rank_step`): a shard with requests waiting registers here
(:func:`await_ranking`), and the first shard Bytewax notifies takes every registered one
(:func:`take_due`) and ranks their requests run by run (:func:`rank_round`).
"""

from __future__ import annotations

import threading
import time
import weakref
from datetime import datetime, timezone
from typing import TYPE_CHECKING

import numpy as np

from models.attribution import expire
from models.batch_ranking import ItemCodes, RankModels, rank_batch
from models.content import user_vector
from models.ranking import RankInput
from operators.messages import RecUpdate
from operators.rank_order import rec_id
from operators.rank_state import RankStepConfig
from operators.worker_models import WorkerModels
from streamrec.metrics import RANK_CALL_REQUESTS, RANK_CALL_SECONDS

if TYPE_CHECKING:
    from operators.rank_step import RankLogic

__all__ = ["DUE_NOW", "await_ranking", "rank_round", "shown_at", "take_due"]


_CODES: dict[int, ItemCodes] = {}  # per worker thread (see operators.worker_models)


def _item_codes() -> ItemCodes:
    """This worker's item codes: a cache shared by its rank shards."""
    codes = _CODES.get(threading.get_ident())
    if codes is None:
        codes = _CODES[threading.get_ident()] = ItemCodes()
    return codes


_DUE: dict[tuple[int, int], tuple[object, dict]] = {}
# A notification time that is always due: Bytewax calls ``on_notify`` in the step's next
# activation, after ``on_batch`` has run for every shard that had input.
DUE_NOW = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _due(owner: object) -> dict:
    """This worker's rank shards (of the flow whose config is ``owner``) with complete
    requests waiting to be ranked, in the order they got them: ``id(logic) -> weak
    reference`` (a run that stopped early leaves no shard behind for the next one)."""
    key = (threading.get_ident(), id(owner))
    got = _DUE.get(key)
    if got is None or got[0] is not owner:
        got = _DUE[key] = (owner, {})
    return got[1]


def await_ranking(logic: "RankLogic") -> None:
    """Put ``logic`` among its worker's shards to rank (once; it keeps its place)."""
    due = _due(logic.cfg)
    ref = due.get(id(logic))
    if ref is None or ref() is not logic:
        due.pop(id(logic), None)  # an id left by a shard that is gone
        due[id(logic)] = weakref.ref(logic)


def take_due(owner: object) -> list["RankLogic"]:
    """The worker's shards waiting to be ranked, in order; the registry is emptied."""
    key = (threading.get_ident(), id(owner))
    got = _DUE.pop(key, None)
    if got is None or got[0] is not owner:
        return []
    return [logic for logic in (ref() for ref in got[1].values()) if logic is not None]


def rank_round(cfg: RankStepConfig, round_: list[list], shared: WorkerModels) -> list[RecUpdate]:
    """Rank one run of complete requests (``[request, answers, shard logic]``) in one
    :func:`rank_batch` call, each with its own shard's blend rows, factor model and
    answer vectors; record what each shard keeps of its lists (last seq, what was shown
    for the blend to learn from, attribution)."""
    inputs = []
    contexts = []
    for request, answers, logic in round_:
        st = logic.state
        inputs.append(RankInput(
            ts=request.ts,
            anchors=[(a.anchor_weight, a.followers) for a in answers],
            knn=[(a.anchor_weight, a.knn) for a in answers if a.knn],
            categories=request.categories,
            session_categories=request.session_categories,
            preferences=request.preferences,
            segment=request.segment,
            seen=request.seen,
            excluded=request.excluded,
            seen_filter=request.seen_filter,
            cold=request.cold,
            content=user_vector([(a.anchor_weight, a.vector) for a in answers if a.vector]),
            user_id=request.user_id,
            history=request.history,
            anchor_items=[a.item_id for a in answers],
            anchor_vectors={a.item_id: a.vector for a in answers if a.vector} or None,
            page_category=request.page_category,
            page=request.page,
            fatigue=(st.attribution.fatigue(request.user_id, request.ts)
                     if cfg.attribution else None),
        ))
        contexts.append(st.blend.context(len(request.seen)))
    shards = list(dict.fromkeys(e[2] for e in round_))
    one = shards[0].state if len(shards) == 1 else None
    models = RankModels(shared.trending, shared.item_category, shared.unavailable,
                        shared.vectors, one.mf if one else None, _item_codes(),
                        local_vectors=one.vectors if one else None,
                        item_price=shared.item_price,
                        item_attributes=shared.item_attributes, rules=shared.rules,
                        new_items=shared.new_items,
                        facts_version=(shared.facts_owner, shared.facts_version),
                        mf_of=None if one else [e[2].state.mf for e in round_],
                        local_of=None if one else [e[2].state.vectors for e in round_])
    # Each shard's blend rows (and, with experiments, each variant's rows after the
    # learned ones', models.experiments), one table for the round.
    exp = cfg.experiment
    plain = len(exp.variants) == 1 and exp.variants[0].learned
    tables, at = [], {}
    offset = 0
    for logic in shards:
        learned = np.stack([b.weights for b in logic.state.blend.blends])
        table = learned if plain else exp.weight_rows(learned)
        at[logic] = (offset, len(learned))
        tables.append(table)
        offset += len(table)
    weights = tables[0] if len(tables) == 1 else np.concatenate(tables)
    if plain:
        assigned = [(0, 1.0)] * len(round_)
        rows = [at[e[2]][0] + c for e, c in zip(round_, contexts)]
    else:
        assigned = [exp.assign(e[0].user_id) for e in round_]
        rows = [at[e[2]][0] + v * at[e[2]][1] + c
                for e, (v, _), c in zip(round_, assigned, contexts)]
    started = time.perf_counter()
    results = rank_batch(inputs, models, cfg.ranking, weights, rows)
    RANK_CALL_SECONDS.observe(time.perf_counter() - started)
    RANK_CALL_REQUESTS.observe(len(inputs))
    names = [v.name for v in exp.variants]
    out = []
    for (request, _, logic), result, context, (variant, propensity) in zip(
            round_, results, contexts, assigned):
        st = logic.state
        items, strategy, reasons = result.items, result.strategy, result.reasons
        if not items:
            items, strategy = logic._last_resort(request, shared), "recent"
            reasons = [{"kind": "recent"}] * len(items)
        if request.item_id is not None:
            recent = st.recent
            recent.pop(request.item_id, None)
            recent[request.item_id] = None
            if len(recent) > 100:
                del recent[next(iter(recent))]
        if cfg.ranking.learn_blend and result.candidates:
            shown = st.shown
            shown.pop(request.user_id, None)
            # A copy: the batch's rows are one matrix, and a kept slice would keep all of it.
            shown[request.user_id] = (result.candidates, result.features.copy(), context,
                                      request.ts)
            if len(shown) > cfg.max_feedback_users:
                del shown[next(iter(shown))]
        last = st.last_seq
        seen = last.pop(request.user_id, 0)
        last[request.user_id] = max(seen, request.seq)
        if len(last) > cfg.max_users:
            del last[next(iter(last))]
        rid = rec_id(request.user_id, request.seq, request.event_id)
        if cfg.attribution:
            st.attribution.listed(rid, request.user_id, request.ts, tuple(i for i, _ in items),
                                  names[variant], propensity, strategy, request.segment)
        out.append(
            RecUpdate(request.user_id, request.user_id, request.seq, request.event_id,
                      request.ts, request.ingested_at, items, strategy, cfg.model_version,
                      reasons, rid, names[variant], propensity)
        )
    _expire_old_lists(cfg, shards, max(e[0].ts for e in round_))
    return out


def _expire_old_lists(cfg: RankStepConfig, shards: list, ts: float) -> None:
    """A list earns clicks, sales and the blend's learning for the attribution window
    (RankLogic._learn); the feedback rows and attributed lists of users who have not
    come back for two windows go (two: an event a little behind the newest list still
    finds its own). Once per round and shard, as of the round's newest event, but never
    later than the wall clock: an event stamped hours ahead (a client's clock) must not
    take every other user's lists with it."""
    cutoff = min(ts, time.time()) - 2 * cfg.attribution_window
    for logic in shards:
        st = logic.state
        expire(st.shown, cutoff, shown_at)
        st.attribution.expire(cutoff)


def shown_at(rows: tuple) -> float:
    """Event time of the list a user's feedback rows are from (rows kept by a release
    that did not record it count as expired)."""
    return rows[3] if len(rows) > 3 else float("-inf")
