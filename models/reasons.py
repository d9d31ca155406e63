"""Why each listed item is there: the signal that adds most to its score, with what
proposed it where there is something to name (the recent item whose follower it is, the
category it trends in). See docs/ranking.md#reasons for the kinds.
"""

from __future__ import annotations

import numpy as np

from models.ranking import FEATURES, RankResult

__all__ = ["explain"]

_F = {name: i for i, name in enumerate(FEATURES)}

# A reason's kind per feature column: the cold-start copies count as what they copy.
_REASON_OF = {i: name for i, name in enumerate(FEATURES)}
_REASON_OF[_F["covis_cold"]] = "covis"
_REASON_OF[_F["trending_cold"]] = "trending"
_NAMED = {_F["covis"]: "because", _F["covis_cold"]: "because", _F["category"]: "category"}
_PLAIN = [{"kind": _REASON_OF[k]} for k in range(len(FEATURES))]
_TRENDING = {"kind": "trending"}


def explain(results: list[RankResult], X: np.ndarray, row_req: np.ndarray, origin: np.ndarray,
             weights: np.ndarray, ctx: np.ndarray, entries: tuple, tag_names: list,
             rules_of: tuple | None = None) -> None:
    """Give each listed item its reason: the signal that adds most to its score, with
    what proposed it where there is one to name (the recent item whose followers it is,
    the category it trends in). ``rules_of`` is ``(boosted, names)``: per candidate row
    the index of the boost rule that matched it (-1: none) and the rules' ids; a
    boosted item's reason names its rule."""
    rows = [r for res in results if res.reasons for r in res.reasons]
    if not rows:
        for res in results:
            res.reasons = []
        return
    rows = np.asarray(rows, dtype=np.intp)
    contrib = X[rows] * weights[ctx[row_req[rows]]]
    kind = np.argmax(contrib, axis=1)
    positive = contrib[np.arange(len(rows)), kind] > 0
    # The strongest entry of that kind for each listed row names what proposed it.
    entry_row, entry_col, vals, tags = entries
    strongest = np.full(int(entry_row.max()) + 1, -1, dtype=np.intp)
    strongest[origin[rows]] = np.where(positive, kind, -1)
    wanted = strongest[entry_row]
    match = (wanted == entry_col) | ((wanted == _F["covis_cold"]) & (entry_col == _F["covis"]))
    match &= tags > 0
    named: dict[int, str] = {}
    if match.any():
        idx = np.flatnonzero(match)
        order = idx[np.lexsort((-vals[idx], entry_row[idx]))]
        rows_in_order = entry_row[order]
        first = np.concatenate(([True], rows_in_order[1:] != rows_in_order[:-1]))
        for row, tag in zip(entry_row[order][first].tolist(), tags[order][first].tolist()):
            named[row] = tag_names[tag]
    # Reasons that name nothing are shared (read-only) dicts, one per kind: most listed
    # items have one, and a dict per item was a third of this function.
    reasons = []
    add = reasons.append
    for row, k, ok in zip(origin[rows].tolist(), kind.tolist(), positive.tolist()):
        if not ok:
            add(_TRENDING)
            continue
        field_name = _NAMED.get(k)
        if field_name is not None:
            name = named.get(row)
            if name is not None:
                add({"kind": _REASON_OF[k], field_name: name})
                continue
        add(_PLAIN[k])
    if rules_of is not None:
        boosted, names = rules_of
        for j, which in enumerate(boosted[rows].tolist()):
            if which >= 0:
                reasons[j] = {**reasons[j], "rule": names[which]}
    at = 0
    for res in results:
        n = len(res.reasons or [])
        res.reasons = reasons[at : at + n]
        at += n
