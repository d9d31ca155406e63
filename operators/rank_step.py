"""The rank step: gathers a user's rank request and the item answers it waits for,
then blends all signals into a top-K list.

Keyed by rank shard (a stable hash of the user id), so that shared, slowly changing
models (trending, segment popularity, item availability) live next to the users they
serve without a global key.

Ranking is one call per worker, not one per shard: ``on_batch`` only gathers a shard's
complete requests (state: ``RankShardState.waiting``) and asks to be notified at once;
in the step's next activation the first shard notified ranks the complete requests of
every shard of its worker together (each with its own shard's blend, factor model and
answer vectors), and the others find nothing left. A ranking call has a fixed cost of
about as much as two or three requests, and with one call per shard, small batches
(a live stream at a modest rate) paid it for nearly every list.
"""

from __future__ import annotations

import logging
import pickle
import weakref
from itertools import islice
from typing import Iterable

from bytewax.operators import StatefulBatchLogic

import numpy as np

from models.ranking import FEATURES
from operators.messages import (
    Availability, EraseUser, FeaturesBundle, Feedback, ForgetUser, ItemAnswer, ItemFeatures,
    RankRequest,
    RecUpdate, RulesUpdate, TrendDelta,
)
from streamrec.metrics import ATTRIBUTED, ATTRIBUTED_REVENUE, RANK_USERS
# RankShardState is re-exported: snapshots taken before it moved name it here.
from operators.rank_state import RankShardState, RankStepConfig, of_erased_life
from operators.rank_calls import DUE_NOW, shown_at, await_ranking, rank_round, take_due
from operators.rank_order import answer_order, event_time_order, rounds
from operators.worker_models import WorkerModels, adopt, worker_models

__all__ = ["RankStepConfig", "RankShardState", "RankLogic"]

log = logging.getLogger(__name__)


def _slot_life(slot: list) -> float | None:
    """The life of the user that a pending request (or its first answer) belongs to."""
    request, answers = slot
    if request is not None:
        return request.life
    return answers[0].life if answers else None


_LIVE: "weakref.WeakSet[RankLogic]" = weakref.WeakSet()  # this process's rank shards


def _rank_users() -> float:
    """Users with ranking state in this process (read at scrape time)."""
    for _ in range(3):  # a shard may be built while we count: try again
        try:
            return float(sum(len(logic.state.last_seq) for logic in list(_LIVE)))
        except RuntimeError:
            continue
    return float("nan")


RANK_USERS.set_function(_rank_users)

# (tag, shard state, the worker's models as bytes); /3: the state holds requests waiting
# for the worker's ranking call (an older release refuses it instead of dropping them).
_SNAPSHOT = "rank-shard/3"
_SNAPSHOTS = ("rank-shard/2", _SNAPSHOT)


class RankLogic(StatefulBatchLogic):
    def __init__(self, cfg: RankStepConfig, resume: bytes | None) -> None:
        self.cfg = cfg
        _LIVE.add(self)
        if resume is None:
            self.state = RankShardState(cfg)
            return
        restored = pickle.loads(resume)
        if isinstance(restored, tuple) and restored[0] in _SNAPSHOTS:
            _, self.state, models = restored
            models = pickle.loads(models)
        else:  # a snapshot from before the worker's shared models
            self.state, models = restored, restored.legacy
            restored.legacy = None
        if models is not None:
            # The snapshot's window, or none (older ones): this config's.
            models.vectors.set_search_window(cfg.content_search_window)
            models.new_items.window = cfg.new_item_window
            adopt(cfg, models)
        if self.state.waiting:  # complete before the snapshot, not ranked yet
            await_ranking(self)

    def models(self) -> WorkerModels:
        """The item-side models of this worker (shared by its rank shards)."""
        return worker_models(self.cfg, self.cfg.worker_models)

    def on_batch(self, values: list) -> tuple[Iterable, bool]:
        """``values``: bundles (lists) of messages to this shard, in the order they were
        sent (``dataflows.routing.bundled``)."""
        values = [m for bundle in values for m in bundle]
        st = self.state
        models = self.models()
        done: list[list] = []
        erased: list[EraseUser] = []
        outcomes: list = []
        for msg in values:
            if isinstance(msg, ItemAnswer):
                if of_erased_life(st.forgotten.get(msg.user_id), msg.seq, msg.life):
                    continue
                slot = st.pending.setdefault((msg.user_id, msg.seq), [None, []])
                slot[1].append(msg)
            elif isinstance(msg, RankRequest):
                if of_erased_life(st.forgotten.get(msg.user_id), msg.seq, msg.life):
                    continue
                slot = st.pending.setdefault((msg.user_id, msg.seq), [None, []])
                slot[0] = msg
            elif isinstance(msg, TrendDelta):
                models.take_broadcast(msg.origin, msg.seq, msg.release, msg.items, msg.segments)
                continue
            elif isinstance(msg, Availability):
                models.set_available(msg.item_id, msg.available)
                continue
            elif isinstance(msg, FeaturesBundle):
                if models.take_copy(msg.origin, msg.seq):
                    for f in msg.features:
                        models.set_features(f.item_id, f.category, f.vector, f.price,
                                            f.attributes, f.new)
                continue
            elif isinstance(msg, ItemFeatures):
                models.set_features(msg.item_id, msg.category, msg.vector, msg.price,
                                    msg.attributes, msg.new)
                continue
            elif isinstance(msg, RulesUpdate):
                models.set_rules(msg.seq, msg.rules)
                continue
            elif isinstance(msg, Feedback):
                outcomes.extend(self._attribute(msg))
                continue
            elif isinstance(msg, ForgetUser):
                st.last_seq.pop(msg.user_id, None)
                st.shown.pop(msg.user_id, None)
                st.mf.forget(msg.user_id)
                st.attribution.forget(msg.user_id)
                # Only the erased life's requests go: with several workers a new life's
                # first answers can arrive before this message, and dropping them left its
                # request waiting forever for answers already thrown away.
                erased_life = (msg.seq, msg.life)
                for table in (st.pending, st.ready):
                    for key in [k for k, slot in table.items() if k[0] == msg.user_id
                                and of_erased_life(erased_life, k[1], _slot_life(slot))]:
                        del table[key]
                st.forgotten.pop(msg.user_id, None)
                st.forgotten[msg.user_id] = erased_life
                if len(st.forgotten) > 10_000:
                    del st.forgotten[next(iter(st.forgotten))]
                # Lists of the old life completed earlier in this batch are not ranked;
                # the sink erases the outputs after every list this shard sent for them.
                done = [slot for slot in done if slot[0].user_id != msg.user_id
                        or not of_erased_life(erased_life, slot[0].seq, slot[0].life)]
                st.waiting = [slot for slot in st.waiting if slot[0].user_id != msg.user_id
                              or not of_erased_life(erased_life, slot[0].seq, slot[0].life)]
                erased.append(EraseUser(msg.user_id, msg.user_id, "outputs", msg.receipt))
                continue
            else:
                err = f"rank step got an unexpected {type(msg).__name__}"
                raise TypeError(err)
            request, answers = slot
            if request is not None and len(answers) >= request.expected:
                del st.pending[(request.user_id, request.seq)]
                self._take_answers(answers)
                done.append(slot)
        if len(st.pending) > self.cfg.max_pending:
            # Never expected in a healthy flow; bounds memory if a message was lost.
            for key in list(st.pending)[: len(st.pending) - self.cfg.max_pending]:
                del st.pending[key]
        if not self.cfg.conflate:
            done = self._in_order(done)
        if done:
            st.waiting.extend(done)
            await_ranking(self)  # ranked with the worker's other shards (on_notify)
        out: list = outcomes
        if erased:
            out = erased + out  # lists of a new life are ranked later: after the erasure
        excess = len(models.deferred) - self.cfg.max_deferred
        if excess > 0:  # no request came for long: let the oldest news in regardless
            models.apply_count(excess)
        return out, StatefulBatchLogic.RETAIN

    def _in_order(self, done: list[list]) -> list[list]:
        """Release complete requests in each user's event order.

        Answers travel different routes, so request n+1 can be complete before request n.
        Ranking n after learning from n+1 would let the list for n see what the user did
        next; every update is kept (no conflation), so each waits for its predecessor.
        """
        st = self.state
        for slot in done:
            st.ready[(slot[0].user_id, slot[0].seq)] = slot
        users = {slot[0].user_id for slot in done}
        released: list[list] = []
        for user in users:
            waiting = [k[1] for k in st.pending if k[0] == user]
            last = st.last_seq.get(user)
            # Released earlier but not ranked yet: those come first.
            queued = [slot[0].seq for slot in st.waiting if slot[0].user_id == user]
            if queued:
                last = max(queued) if last is None else max(last, max(queued))
            while True:
                if last is not None:
                    nxt = last + 1
                else:
                    mine = [k[1] for k in st.ready if k[0] == user]
                    if not mine:
                        break
                    nxt = min(mine)
                    if waiting and min(waiting) < nxt:
                        break  # an earlier request of this user is still gathering answers
                slot = st.ready.pop((user, nxt), None)
                if slot is None:
                    break
                released.append(slot)
                last = nxt
        if len(st.ready) > self.cfg.max_pending:
            # Never expected in a healthy flow; bounds memory if a request was lost.
            for key in list(st.ready)[: len(st.ready) - self.cfg.max_pending]:
                released.append(st.ready.pop(key))
        return released

    def notify_at(self):
        return DUE_NOW if self.state.waiting else None

    def on_notify(self) -> tuple[Iterable, bool]:
        return self._rank_due(), StatefulBatchLogic.RETAIN

    def on_eof(self) -> tuple[Iterable, bool]:
        return self._rank_due(), StatefulBatchLogic.RETAIN

    def _rank_due(self) -> list[RecUpdate]:
        """Rank the waiting requests of every shard of this worker, together."""
        if self.state.waiting:
            await_ranking(self)
        entries: list[list] = []  # [request, answers, the shard's logic]
        for logic in take_due(self.cfg):
            waiting = logic.state.waiting
            if waiting:
                logic.state.waiting = []
                entries.extend([request, answers, logic] for request, answers in waiting)
        return self._rank_all(entries) if entries else []

    def _rank_all(self, entries: list[list]) -> list[RecUpdate]:
        """Rank complete requests (``[request, answers, shard logic]``) in event-time
        order, a run at a time (see :func:`operators.rank_order.rounds`): the blend
        learns from each request's event, then the whole run is ranked in one call
        (:func:`operators.rank_calls.rank_round`)."""
        cfg = self.cfg
        if cfg.conflate:
            latest: dict[str, list] = {}
            for entry in entries:
                prev = latest.get(entry[0].user_id)
                if prev is None or prev[0].seq < entry[0].seq:
                    latest[entry[0].user_id] = entry
            entries = list(latest.values())
        if len(entries) > 1:
            entries = event_time_order(entries)
        out: list[RecUpdate] = []
        models = self.models()
        for round_ in rounds(entries, cfg.batch_window, cfg.round_requests):
            models.apply_until(round_[0][0].ts)
            if cfg.conflate:
                round_ = [e for e in round_
                          if e[2].state.last_seq.get(e[0].user_id, 0) <= e[0].seq]
                if not round_:
                    continue  # older requests finished after newer ones: stale
            if cfg.ranking.learn_blend:
                for request, _, logic in round_:
                    if request.item_id is not None:
                        logic._learn(request.user_id, request.item_id, request.ts)
            out.extend(rank_round(cfg, round_, models))
        return out

    def _attribute(self, msg: Feedback) -> list:
        """Outcomes of one impression, click, cart or purchase (models.attribution)."""
        at = self.state.attribution
        if msg.kind == "impression":
            got = at.impression(msg.user_id, msg.rec_id, msg.items, msg.ts)
        else:
            got = at.action(msg.user_id, msg.kind, msg.item_id, msg.rec_id, msg.ts, msg.value)
        for o in got:
            ATTRIBUTED.labels(o.kind, o.variant, o.strategy).inc()
            if o.value:
                ATTRIBUTED_REVENUE.labels(o.variant, o.strategy).inc(o.value)
        return got

    def _take_answers(self, answers: list[ItemAnswer]) -> None:
        """Put a complete request's answers in a fixed order (the most recent anchor,
        heaviest, first, then by item) and keep the vectors they carry.

        They arrive in whatever order the item workers sent them (with several processes,
        a different one every run), and that order would break ties in the candidate list
        (first come, first listed) and decide the shard's vector slots."""
        if len(answers) > 1:
            answers.sort(key=answer_order)
        vectors = self.state.vectors
        for a in answers:
            if a.vector is not None:
                vectors.put(a.item_id, a.vector)

    def _last_resort(self, request: RankRequest, shared: WorkerModels) -> list[tuple[str, float]]:
        """What this shard's users acted on just before, newest first, then what this user
        did, then the catalog items this worker learnt last: for the first events of a
        fresh system, when no signal has anything yet (trend news travels further)."""
        skip = set(request.excluded) | shared.unavailable
        k = self.cfg.ranking.k
        picked = [i for i in reversed(self.state.recent) if i not in skip][:k]
        if len(picked) < k:
            # Nothing else yet (this shard's first requests): the user's own recent items,
            # then the catalog items this worker learnt last.
            taken = set(picked)
            picked += [i for i in reversed(request.seen) if i not in skip and i not in taken][: k - len(picked)]
        if len(picked) < k:
            taken = set(picked)
            known = islice(reversed(shared.item_category), 4 * k)
            picked += [i for i in known if i not in skip and i not in taken][: k - len(picked)]
        return [(item, round(0.5 ** n, 6)) for n, item in enumerate(picked)]

    def _learn(self, user_id: str, chosen: str, ts: float) -> None:
        """The user chose ``chosen`` at ``ts``: teach the blend to rank it above what
        outranked it in their last list, if that list is at most the attribution window
        older (a later choice is not an answer to it)."""
        previous = self.state.shown.pop(user_id, None)
        if previous is None or ts - shown_at(previous) > self.cfg.attribution_window:
            return
        candidates, features, context = previous[:3]
        try:
            idx = candidates.index(chosen)
        except ValueError:
            idx = -1
        # The factor model learns from every choice: the chosen item against the top of
        # what was shown and passed over.
        self.state.mf.learn(user_id, chosen, [c for c in candidates[:3] if c != chosen][:2])
        if idx < 0:
            return  # no signal proposed it: nothing to learn about their balance
        span = self.cfg.ranking.feedback_negatives
        if idx == 0:
            negatives = features[1 : 1 + span]
        else:
            negatives = features[max(0, idx - span) : idx]
        blend = self.state.blend[context]
        blend.learn(features[idx].astype(np.float64), negatives.astype(np.float64))
        if blend.updates % 2000 == 0:
            log.debug("blend (context %d) after %d updates: %s", context, blend.updates,
                      dict(zip(FEATURES, np.round(blend.weights, 3))))

    def snapshot(self) -> bytes | None:
        if not self.cfg.snapshots:
            return None  # recovery is off: nobody reads it
        return pickle.dumps((_SNAPSHOT, self.state, self.models().pickled()),
                            protocol=pickle.HIGHEST_PROTOCOL)
