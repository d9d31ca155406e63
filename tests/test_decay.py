"""Decayed values and counters (models.decay, models.compact): decay by event time, bounds,
the cached head of a counter, pickles, and the compact layout matching the plain one."""

from __future__ import annotations

import heapq
import pickle
import random

import pytest

from models.decay import DecayedCounter, DecayedScalar, decayed_weight


def test_decay_halves_per_half_life():
    assert decayed_weight(0.0, 10.0) == 1.0
    assert decayed_weight(20.0, 10.0) == pytest.approx(0.25)


def test_forward_decay_matches_direct_decay_across_rebases():
    c = DecayedCounter(half_life=1.0, capacity=10)
    direct = 0.0
    for t in range(0, 400, 3):  # ~400 half-lives: several landmark moves
        c.add("a", 1.0, float(t))
        direct = direct * decayed_weight(3.0, 1.0) + 1.0 if t else 1.0
    assert c.value("a", 399.0) == pytest.approx(direct, rel=1e-9)
    s = DecayedScalar(1.0)
    for t in range(0, 400, 3):
        s.add(1.0, float(t))
    assert s.value(399.0) == pytest.approx(direct, rel=1e-9)


def test_counter_add_across_a_landmark_move_is_kept():
    from models.compact import CompactCounter

    for counter in (DecayedCounter(1.0, 10), CompactCounter(1.0, 10)):
        counter.add("a", 1.0, 0.0)
        counter.add("b", 1.0, 100.0)  # 100 half-lives: the landmark moves on this add
        assert counter.value("b", 100.0) == pytest.approx(1.0)
        assert counter.value("a", 100.0) == pytest.approx(2.0**-100)
        assert [k for k, _ in counter.top(2, 100.0)] == ["b", "a"]


def test_counter_is_bounded_and_keeps_the_heaviest():
    c = DecayedCounter(half_life=1e9, capacity=100)
    for i in range(10_000):
        c.add(f"k{i}", float(i), 0.0)
        assert len(c) <= 126
    assert [k for k, _ in c.top(3, 0.0)] == ["k9999", "k9998", "k9997"]


def test_counter_cached_head_follows_every_write():
    # top() keeps its sorted head between writes and moves one key within it per write;
    # after any mix of writes it must equal a fresh sort of every key.
    # Half the seeds write from a few values (ties everywhere) to counters with fewer keys
    # than a read asks for (the head then holds every key).
    for seed in range(80):
        rng = random.Random(seed)
        c = DecayedCounter(rng.choice([5.0, 1e6]), rng.choice([4, 20, 300]))
        ties = seed % 2 == 1
        keys = rng.choice([6, 40]) if ties else 40
        ts = 0.0
        for _ in range(600):
            ts += 0.0 if ties and rng.random() < 0.5 else rng.random()
            key = f"k{rng.randrange(keys)}"
            value = rng.choice([1.0, 2.0, 3.0]) if ties else rng.random() * 10
            r = rng.random()
            if r < 0.45:
                c.set(key, rng.choice([0.0, value]), ts)
            elif r < 0.85:
                c.add(key, value / 10 if not ties else value, ts)
            elif r < 0.9:
                c.remove(key)
            n = rng.choice([1, 5, 15, 50])
            # Ties in insertion order, as heapq.nlargest over the dict gives them.
            fresh = heapq.nlargest(n, c.weights.items(), key=lambda kv: kv[1])
            fresh = [(k, v * c.factor(ts)) for k, v in fresh if v > 0.0]
            assert c.top(n, ts) == fresh


def test_counter_pickles_and_reads_do_not_mutate():
    c = DecayedCounter(100.0, 10)
    for i in range(30):
        c.add(f"k{i % 12}", 1.0, float(i))
    before = pickle.dumps(c)
    c.top(5, 1000.0), c.value("k1", 1000.0), c.total(1000.0)
    assert pickle.dumps(c) == before
    again = pickle.loads(before)
    assert again.top(5, 40.0) == c.top(5, 40.0)


def test_compact_counter_matches_decayed_counter():
    from models.compact import CompactCounter

    for seed in range(60):
        rng = random.Random(seed)
        half_life, capacity = rng.choice([1.0, 10.0, 1e6]), rng.choice([1, 3, 32])
        a, b = DecayedCounter(half_life, capacity), CompactCounter(half_life, capacity)
        ts = 0.0
        for _ in range(300):
            ts += rng.choice([0.0, 0.5, 3.0, 100.0])  # 100 half-lives: landmark moves
            key, op = f"k{rng.randrange(rng.choice([3, 50]))}", rng.random()
            if op < 0.6:
                w = rng.choice([1.0, 2.0, rng.random()])
                a.add(key, w, ts)
                b.add(key, w, ts)
            elif op < 0.7:
                a.set(key, 0.5, ts)
                b.set(key, 0.5, ts)
            elif op < 0.75:
                a.remove(key)
                b.remove(key)
            elif op < 0.8:
                a, b = pickle.loads(pickle.dumps(a)), pickle.loads(pickle.dumps(b))
            else:
                a, b = a.copy(), b.copy()
            n = rng.choice([1, 3, 8, 100])
            assert b.top(n, ts + 1.0) == a.top(n, ts + 1.0)
            assert b.value(key, ts) == a.value(key, ts) and b.total(ts) == a.total(ts)
            assert len(b) == len(a) and (key in b) == (key in a)
