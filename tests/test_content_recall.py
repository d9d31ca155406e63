"""Content recall and cosines for a whole batch give what one request at a time gives."""

from __future__ import annotations

import numpy as np
import pytest

from models.content import VectorIndex, item_vector, user_vector
from models.content_recall import batch_cosines, nearest_batch, nearest_names, nearest_of
from models.ranking import RankInput


def _index(rng, n: int, window: int, prefix: str, categories: int) -> VectorIndex:
    index = VectorIndex(capacity=max(n // 2, 4), search_window=window)
    for i in range(n):  # wraps round: some items forgotten, window slots discarded
        tags = [f"t{rng.integers(0, 3)}"] if rng.random() < 0.3 else []
        index.put(f"{prefix}{i}", item_vector(f"c{rng.integers(0, categories)}", tags, None))
    return index


def _brute_nearest(index: VectorIndex, user: np.ndarray, n: int) -> list[str]:
    """Positive similarities, best first, ties in window slot order."""
    space = index.recent if index.recent is not None else index
    values = space.matrix[: len(space.items)] @ np.asarray(user, np.float32)
    sims = [(float(v), slot) for slot, v in enumerate(values.tolist())]
    ranked = sorted((s for s in sims if s[0] > 0.0), key=lambda p: (-p[0], p[1]))
    return [space.items[slot] for _, slot in ranked[:n]]


@pytest.mark.parametrize("seed", range(6))
def test_nearest_many_is_the_per_user_top_n_with_ties_in_slot_order(seed):
    rng = np.random.default_rng(seed)
    index = _index(rng, 300, window=64 if seed % 2 else 0, prefix="i", categories=5)  # many ties
    users = [user_vector([(1.0, item_vector(f"c{rng.integers(0, 7)}", [], None))])
             for _ in range(40)]
    users = np.stack([u if u is not None else np.zeros(64, np.float32) for u in users])
    for n in (1, 7, 30, 500):
        got = index.nearest_many(users, n)
        assert [[i for i, _ in g] for g in got] == [_brute_nearest(index, u, n) for u in users]
        assert got == [index.nearest(u, n) for u in users]


def _merged_reference(users, n, shared, local) -> list[list[tuple[str, float]]]:
    """One user at a time: the shared index's top n, then the local picks it lacks, the
    best n of both (a stable sort: ties keep that order)."""
    out = []
    for u in users:
        mine = shared.nearest(u, n) if shared is not None and len(shared) else []
        if local is None:
            out.append(mine)
            continue
        seen = {i for i, _ in mine}
        merged = mine + [(i, s) for i, s in local.nearest(u, n) if i not in seen]
        out.append(sorted(merged, key=lambda p: -p[1])[:n])
    return out


@pytest.mark.parametrize("seed", range(5))
def test_nearest_batch_is_the_merge_of_each_users_two_lists(seed):
    rng = np.random.default_rng(seed)
    shared = _index(rng, 240, 48 if seed % 2 else 0, "s", 3 + seed)
    local = _index(rng, 160, 0, "l", 4)
    for i in range(0, 240, 5):  # some items in both, with the shared vector or another one
        vec = shared.get(f"s{i}")
        if vec is not None and rng.random() < 0.7:
            local.put(f"s{i}", vec.astype(np.float16).tobytes())
        else:
            local.put(f"s{i}", item_vector(f"c{rng.integers(0, 4)}", [], None))
    users = [user_vector([(1.0, item_vector(f"c{rng.integers(0, 6)}", ["t1"] if rng.random() < 0.3 else [], None))])
             for _ in range(30)]
    users = np.stack([u if u is not None else np.zeros(64, np.float32) for u in users])
    for n in (1, 4, 25, 400):
        for s, lo in ((shared, local), (None, local), (shared, None), (VectorIndex(4, 0), local)):
            want = _merged_reference(users, n, s, lo)
            assert nearest_batch(users, n, s, lo) == want
            assert nearest_names(users, n, s, lo) == [[i for i, _ in w] for w in want]


def test_nearest_batch_merges_the_shared_and_local_indexes_as_one_request_does():
    rng = np.random.default_rng(7)
    shared = _index(rng, 200, 32, "s", 4)
    local = _index(rng, 200, 32, "l", 4)
    for i in range(0, 200, 9):  # some items in both
        local.put(f"s{i}", shared.get(f"s{i}").astype(np.float16).tobytes() if shared.get(f"s{i}") is not None else None)
    users = np.stack([shared.matrix[j] for j in range(12)])
    got = nearest_batch(users, 10, shared, local)
    assert got == [nearest_of(u, 10, shared, local) for u in users]
    assert any(i.startswith("l") for g in got for i, _ in g)
    assert nearest_batch(users, 10, None, None) == [[] for _ in users]


def _one_request(inp: RankInput, items: list[str], shared, local) -> np.ndarray:
    """The per-request computation the batch replaces."""
    if inp.content is None:
        return np.zeros(len(items), np.float32)
    indexed = shared is not None and len(shared) > 0
    sims = shared.cosine(inp.content, items) if indexed else np.zeros(len(items), np.float32)
    known = shared.slot_of if indexed else {}
    if local is not None:
        missing = [j for j, i in enumerate(items) if i not in known]
        if missing:
            sims[missing] = local.cosine(inp.content, [items[j] for j in missing])
    for item, vector in (inp.anchor_vectors or {}).items():
        if item in known or (local is not None and item in local.slot_of) or item not in items:
            continue
        sims[items.index(item)] = (np.frombuffer(vector, dtype=np.float16).astype(np.float32)
                                   @ inp.content)
    return np.clip(sims, 0.0, None)


@pytest.mark.parametrize("seed", range(5))
def test_batch_cosines_equal_one_request_at_a_time(seed):
    rng = np.random.default_rng(seed)
    shared = _index(rng, 120, 16, "s", 6) if seed != 1 else None
    local = _index(rng, 120, 16, "l", 6) if seed != 2 else None
    pool = [f"s{i}" for i in range(120)] + [f"l{i}" for i in range(120)] + [f"x{i}" for i in range(20)]
    inputs, rows = [], []
    for r in range(15):
        items = list(dict.fromkeys(rng.choice(pool, size=int(rng.integers(0, 25))).tolist()))
        content = None if r % 5 == 4 else user_vector(
            [(1.0, item_vector(f"c{rng.integers(0, 6)}", [], None))])
        anchors = {i: item_vector(f"c{rng.integers(0, 6)}", [], None)
                   for i in items if i.startswith("x") and rng.random() < 0.7} or None
        inputs.append(RankInput(ts=0.0, content=content, anchor_vectors=anchors))
        rows.append(items)
    row_req = np.repeat(np.arange(len(rows)), [len(r) for r in rows])
    row_items = [i for r in rows for i in r]
    starts = np.searchsorted(row_req, np.arange(len(rows) + 1))
    got = batch_cosines(inputs, row_req, row_items, starts, shared, local)
    expected = [_one_request(inp, items, shared, local) for inp, items in zip(inputs, rows)]
    if got is None:
        assert all(not e.any() for e in expected)
        return
    for r, e in enumerate(expected):
        assert got[starts[r] : starts[r + 1]].tolist() == e.tolist()
    assert got.any()


def test_nearest_many_over_several_chunks_of_users_is_still_per_user():
    rng = np.random.default_rng(3)
    index = _index(rng, 200, 0, "i", 4)
    users = [user_vector([(1.0, item_vector(f"c{rng.integers(0, 5)}", ["t1"] if rng.random() < 0.5 else [], None))])
             for _ in range(600)]  # more than one chunk of users (models.content._CHUNK)
    users = np.stack([u if u is not None else np.zeros(64, np.float32) for u in users])
    got = index.nearest_many(users, 12)
    assert len(got) == 600
    assert got == [index.nearest(u, 12) for u in users]
