"""The item vocabulary: bounded, evicts the coldest items, survives a snapshot."""

from __future__ import annotations

import pickle
import random

import numpy as np
import pytest

from models.vocabulary import ItemVocabulary


def test_slots_are_dense_stable_and_round_trip():
    v = ItemVocabulary(capacity=100)
    slots = v.encode(["a", "b", "a", "c"], ts=1.0)
    assert slots.tolist() == [0, 1, 0, 2]
    assert v.decode(slots.tolist()) == ["a", "b", "a", "c"]
    assert v.encode(["c", "a"], ts=2.0).tolist() == [2, 0]
    assert v.lookup(["b", "zz"]).tolist() == [1, -1]
    assert len(v) == 3 and "zz" not in v


def test_eviction_frees_the_least_recently_touched_and_reports_them():
    v = ItemVocabulary(capacity=32)
    v.encode([f"cold{i}" for i in range(16)], ts=0.0)
    v.encode([f"hot{i}" for i in range(16)], ts=10.0)
    assert len(v) == 32
    evicted: list[int] = []
    new = v.encode(["new0", "new1"], ts=20.0, evicted=evicted)
    # A sixteenth of the capacity goes at once (2 slots), all of them cold ones.
    assert len(evicted) == 2 and set(new.tolist()) == set(evicted)
    assert all(f"hot{i}" in v for i in range(16))
    assert sum(f"cold{i}" in v for i in range(16)) == 14
    assert len(v) == 32 and v.size == 32


def test_touching_keeps_an_item_alive():
    v = ItemVocabulary(capacity=16)
    v.encode([f"p{i}" for i in range(16)], ts=0.0)
    v.encode(["p0"], ts=5.0)  # used again: now the warmest
    for t in range(1, 15):
        v.encode([f"n{t}"], ts=5.0 + t)
    assert "p0" in v
    assert len(v) <= 16


def test_bounded_under_a_long_stream_of_new_items():
    v = ItemVocabulary(capacity=1000)
    rng = random.Random(3)
    for t in range(20_000):
        v.encode([f"i{rng.randrange(50_000)}", f"hot{t % 10}"], ts=float(t))
    assert len(v) <= 1000 and v.size <= 1000
    assert all(f"hot{k}" in v for k in range(10))
    assert len(v.index) == sum(i is not None for i in v.ids)


def test_snapshot_restores_the_same_mapping_and_continues_identically():
    a = ItemVocabulary(capacity=64)
    rng = random.Random(5)
    for t in range(300):
        a.encode([f"i{rng.randrange(200)}" for _ in range(3)], ts=float(t))
    b = pickle.loads(pickle.dumps(a))
    assert b.index == a.index and b.ids == a.ids
    assert np.array_equal(b.touched[: b.size], a.touched[: a.size])
    for t in range(300, 600):
        batch = [f"i{rng.randrange(400)}" for _ in range(3)]
        ea: list[int] = []
        eb: list[int] = []
        assert a.encode(batch, float(t), ea).tolist() == b.encode(batch, float(t), eb).tolist()
        assert ea == eb


def test_release_and_bad_capacity():
    v = ItemVocabulary(capacity=4)
    v.encode(["x", "y"], ts=0.0)
    assert v.release("x") == 0 and "x" not in v and v.release("x") is None
    assert v.encode(["z"], ts=1.0).tolist() == [0]  # the released slot is reused
    with pytest.raises(ValueError, match="capacity"):
        ItemVocabulary(capacity=0)
