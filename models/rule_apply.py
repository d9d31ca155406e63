"""Merchandising rules applied to a batch's candidate table (``models.batch_ranking``):
which rows blocks, filters and a page category drop, and each row's boost, as array
operations; the rules themselves (records, parsing, matching one item): ``models.rules``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np

from models.rule_columns import FactCache, ItemFacts, RuleColumns

if TYPE_CHECKING:
    from models.rules import RuleSet

__all__ = ["apply_item_rules", "boost"]


def apply_item_rules(rules: RuleSet | None, pages: Sequence[str | None], facts: ItemFacts,
                     row_req: np.ndarray, row_slot: np.ndarray, row_items: list[str],
                     lookup, cache: FactCache | None = None,
                     ) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """Blocks, filters, the per-request page category and boosts over a candidate table.

    ``pages[r]`` is request r's page category (its list shows that category only) or
    None. Returns ``(keep, factors, boosted)``: which rows survive (None: all), the
    boost factor of each row (None: no boosts; apply with :func:`boost` once scored),
    and per row the index in ``rules.boosts`` of the first boost that matched it (-1:
    none). ``cache`` (synced by the caller) keeps facts per item slot, and what the
    rules decided for each slot whose facts are known, so that in steady state the
    rules cost two gathers per batch whatever their number.
    """
    paged = any(pages)
    ruled = rules is not None and rules.item_rules
    if not paged and not ruled:
        return None, None, None
    n = len(row_items)
    factors = boosted = None
    if not ruled:
        keep = np.ones(n, dtype=bool)
    elif cache is None:
        keep, factors, boosted = _decide(rules, RuleColumns(row_items, row_slot, facts, lookup, None))
    else:
        keep, factors, boosted = _decide_cached(rules, facts, row_slot, row_items, lookup, cache)
        if not paged:
            return keep, factors, boosted
    if keep is None:
        keep = np.ones(n, dtype=bool)
    if paged:
        cols = RuleColumns(row_items, row_slot, facts, lookup, cache)
        cat = cols.category()
        codes = cols.codes
        # A page category no candidate has: code -2, which matches no row.
        wanted = np.array([codes.get(p, -2) if p else -3 for p in pages], dtype=np.int64)[row_req]
        keep &= (wanted == -3) | (cat == wanted)
    return (None if keep.all() else keep), factors, boosted


def _decide(rules: RuleSet, cols: RuleColumns):
    """``(keep, factors, boosted)`` of the rows of ``cols`` (factors None: no boosts)."""
    keep = np.ones(len(cols.items), dtype=bool)
    for rule in rules.blocks:
        keep &= ~cols.mask(rule.match)
    for rule in rules.filters:
        keep &= cols.mask(rule.match)
    if not rules.boosts:
        return keep, None, None
    factors = np.ones(len(cols.items))
    boosted = np.full(len(cols.items), -1, dtype=np.intp)
    for i, rule in enumerate(rules.boosts):
        hit = cols.mask(rule.match)
        factors[hit] *= rule.factor
        boosted[hit & (boosted < 0)] = i
    return keep, factors, boosted


def _decide_cached(rules: RuleSet, facts: ItemFacts, row_slot: np.ndarray, row_items: list[str],
                   lookup, cache: FactCache):
    """:func:`_decide` through the per-slot verdicts of ``cache``: only rows whose slot
    has none yet are matched, and a verdict is kept only when every fact the rules read
    is known for its item (a fact learnt later, unknown before, does not move the facts
    version). ``keep`` is None when every row stays; ``factors`` is 0 on dropped rows."""
    cache.sync_rules(rules)
    mult = cache.mult[row_slot]
    low = mult.min() if len(mult) else 1.0
    todo = ()
    if low != low:  # NaN: some slots have no verdict yet (in steady state, none)
        todo = np.flatnonzero(np.isnan(mult))
        items = [row_items[i] for i in todo.tolist()]
        slots = row_slot[todo]
        keep_t, factors_t, boosted_t = _decide(rules, RuleColumns(items, slots, facts, lookup, cache))
        mult_t = np.where(keep_t, 1.0 if factors_t is None else factors_t, 0.0)
        known = np.fromiter((rules.knows(it, facts) for it in items), dtype=bool,
                            count=len(items))
        mult[todo] = mult_t
        store = slots[known]
        cache.mult[store] = mult_t[known]
        if boosted_t is not None:
            cache.boosted[store] = boosted_t[known]
        low = mult.min()
    keep = None if low > 0.0 else mult > 0.0
    if not rules.boosts:
        return keep, None, None
    boosted = cache.boosted[row_slot]
    if len(todo):
        boosted[todo] = boosted_t
    return keep, mult, boosted


def boost(scores: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """Scores times their boost factors; a negative score is divided, so a boost above 1
    always helps and one below 1 always buries (factors are > 0, or 0 on a row that
    rules dropped, which the selection leaves out anyway)."""
    if len(scores) == 0 or scores.min() >= 0.0:  # the usual case: one product
        return scores * factors
    out = scores * factors
    negative = scores < 0.0  # some are: the minimum is
    f = factors[negative]
    out[negative] = scores[negative] / np.where(f > 0.0, f, 1.0)  # 0: a dropped row
    return out
