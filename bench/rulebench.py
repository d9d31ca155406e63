"""What merchandising rules cost the batch ranker: ``rank_batch`` per request, with no
rules and with a handful (a category boost, an attribute boost, an item block list, a
price filter, two pins), on the same random requests; prints medians of several runs.

    python -m bench.rulebench                  # 400 requests, batches of 100, 7 runs
    python -m bench.rulebench --requests 1000 --batch 50

CPU time (``time.process_time``), so other work on the machine weighs less; still, run
it on a quiet machine and compare the two lines of one run, not runs of different days.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import numpy as np

from models.batch_ranking import ItemCodes, RankModels, rank_batch
from models.content import VectorIndex, item_vector
from models.ranking import RankConfig, RankInput
from models.rules import RuleSet, item_attributes, parse_rule
from models.trending import Trending

__all__ = ["RULES", "measure", "main"]

T0 = 1_732_680_000.0
RULES = [
    {"rule_id": "boost-c1", "action": "boost", "match": {"category": "c1"}, "factor": 1.5},
    {"rule_id": "boost-brand", "action": "boost", "match": {"attributes": {"brand": "b2"}},
     "factor": 1.2},
    {"rule_id": "blocked", "action": "block", "match": {"item_id": [f"p{i}" for i in range(0, 200, 7)]}},
    {"rule_id": "cheap", "action": "filter", "match": {"price_max": 250.0}},
    {"rule_id": "pin-1", "action": "pin", "item_id": "p1", "position": 1},
    {"rule_id": "pin-c2", "action": "pin", "item_id": "p2", "position": 3, "match": {"category": "c2"}},
]


def _world(rng: random.Random, n_items: int, n_cats: int = 12):
    items = [f"p{i}" for i in range(n_items)]
    category = {it: f"c{rng.randrange(n_cats)}" for it in items}
    price = {it: round(rng.uniform(1.0, 300.0), 2) for it in items}
    attrs = {it: item_attributes({"brand": f"b{rng.randrange(8)}"}) for it in items}
    trending = Trending(3600.0)
    vectors = VectorIndex(capacity=2000, search_window=256)
    for it in rng.sample(items, n_items // 2):
        trending.observe(it, category[it], rng.uniform(0.1, 50.0), T0 - rng.uniform(0, 600))
        vectors.put(it, item_vector(category[it], [], attrs[it]))
    return items, category, price, attrs, trending, vectors


def _request(rng: random.Random, items: list[str], n_cats: int = 12) -> RankInput:
    cats = [f"c{i}" for i in range(n_cats)]
    return RankInput(
        ts=T0,
        # Like production: the followers of three recent items, 40 each.
        anchors=[(0.5**i, [(it, rng.random()) for it in rng.sample(items, 40)]) for i in range(3)],
        categories=[(c, rng.uniform(0.1, 3.0)) for c in rng.sample(cats, 3)],
        session_categories=[(c, rng.uniform(0.1, 2.0)) for c in rng.sample(cats, 2)],
        seen=rng.sample(items, 5),
        excluded=rng.sample(items, 2),
        user_id=f"u{rng.randrange(1000)}",
    )


def measure(requests: int = 400, batch: int = 100, runs: int = 7, seed: int = 1) -> dict:
    """Microseconds of CPU per request in each run, without rules and with :data:`RULES`
    (the two alternate, run by run)."""
    rng = random.Random(seed)
    items, category, price, attrs, trending, vectors = _world(rng, 3000)
    inputs = [_request(rng, items) for _ in range(requests)]
    cfg = RankConfig(k=20, diversity=0.01)
    rules = RuleSet([parse_rule(r) for r in RULES])
    variants = {}
    for name, ruleset in (("without rules", None), (f"with {len(RULES)} rules", rules)):
        models = RankModels(trending, category, set(), vectors, None, ItemCodes(200_000),
                            price, attrs, ruleset, facts_version=0)  # as the worker: facts cached
        rank_batch(inputs, models, cfg)  # warm the item codes and the fact cache
        variants[name] = (models, [])
    for run in range(runs):
        # Alternated, and in turn first and second (a first pass in a run was seen to be
        # faster than a second of the same code), so a busy moment hits both alike.
        pairs = list(variants.values())
        for models, times in (pairs if run % 2 == 0 else pairs[::-1]):
            started = time.process_time()
            for i in range(0, len(inputs), batch):
                rank_batch(inputs[i : i + batch], models, cfg)
            times.append((time.process_time() - started) / len(inputs) * 1e6)
    return {name: times for name, (_, times) in variants.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.rulebench", description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--batch", type=int, default=100, help="requests per rank_batch call")
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args(argv)
    np.seterr(all="ignore")
    got = measure(args.requests, args.batch, args.runs)
    base = next(iter(got.values()))
    print(f"rank_batch, {args.requests} requests in batches of {args.batch}, median of {args.runs} runs:")
    for name, times in got.items():
        # The cost is the median of the run-by-run ratios: a run and its pair share
        # whatever the machine was doing then.
        ratio = statistics.median(t / b for t, b in zip(times, base))
        print(f"  {name:<16} {statistics.median(times):8.1f} us/request  ({ratio - 1:+.1%})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
