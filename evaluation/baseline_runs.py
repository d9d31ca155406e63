"""Replaying recorded events through the baselines (:mod:`evaluation.baselines`) and
scoring them with :class:`evaluation.metrics.NextItemScorer`; ``python -m
evaluation.baselines`` runs :func:`main`.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence

from tqdm import tqdm

from evaluation.baselines import DecayedPopularity, default_baselines
from evaluation.metrics import SESSION_GAP_SECONDS, NextItemScorer, event_ts

__all__ = ["main", "run_baselines"]


def run_baselines(
    events: Iterable[Mapping],
    test_start: float,
    k_values: Sequence[int] = (10, 20),
    catalog_size: int | None = None,
    progress: bool = True,
    baselines: Mapping[str, Callable[[], object]] | None = None,
    session_gap: float = SESSION_GAP_SECONDS,
) -> dict[str, dict]:
    """Replay ``events`` through each baseline and score it with ``NextItemScorer``
    (``session_gap`` splits sessions for its new-item numbers).

    Per event: score it, learn it, then recommend for its user. A list nobody will
    score (the user's next event is not a scored one) is not computed: it could not
    change any number. Each result also carries ``seconds`` (wall time of the replay).
    """
    events = list(events)
    if catalog_size is None:
        catalog_size = len({e["item_id"] for e in events if e.get("item_id") is not None})
    wanted = _predictions_needed(events, test_start)
    max_k = max(k_values)
    results: dict[str, dict] = {}
    for name, factory in (baselines or default_baselines()).items():
        model = factory()
        scorer = NextItemScorer(k_values=k_values, test_start=test_start, catalog_size=catalog_size,
                                session_gap=session_gap)
        started = time.perf_counter()
        bar = tqdm(events, desc=name, unit="ev", file=sys.stderr, disable=not progress, mininterval=0.5)
        for event, needed in zip(bar, wanted):
            scorer.on_event(event)
            model.learn(event)
            if needed:
                user = event["user_id"]
                scorer.predict(user, model.recommend(user, max_k))
        results[name] = {**scorer.result(), "seconds": round(time.perf_counter() - started, 2)}
    return results


def _predictions_needed(events: Sequence[Mapping], test_start: float) -> list[bool]:
    """For each event: is the same user's next event one that gets scored?"""
    needed = [False] * len(events)
    next_scored: dict[str, bool] = {}
    for index in range(len(events) - 1, -1, -1):
        event = events[index]
        user = event["user_id"]
        needed[index] = next_scored.get(user, False)
        next_scored[user] = event.get("item_id") is not None and event_ts(event) >= test_start
    return needed


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m evaluation.baselines [--data-root DIR] [--datasets ...] [--json FILE]``."""
    import argparse
    from functools import partial
    from pathlib import Path

    import orjson

    from connectors.dataset_sources import DATA_DIR_ENV, dataset_dir
    from connectors.datasets import DATASET_FOLDERS, load_dataset

    parser = argparse.ArgumentParser(description="Score the POP, SR and V-SKNN baselines on the datasets.")
    parser.add_argument("--data-root", type=Path, help=f"folder holding the dataset folders (default ${DATA_DIR_ENV})")
    parser.add_argument("--datasets", nargs="+", default=list(DATASET_FOLDERS), choices=list(DATASET_FOLDERS))
    parser.add_argument("--pop-half-life", type=float, default=3600.0, help="POP half-life in seconds")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    baselines = {**default_baselines(), "POP": partial(DecayedPopularity, half_life=args.pop_half_life)}

    table: dict[str, dict] = {}
    columns = ("HR@10", "MRR@10", "HR@20", "MRR@20", "NDCG@20", "coverage@20", "HR@20_new", "MRR@20_new")
    header = (f"{'dataset':<10} {'model':<7} " + " ".join(f"{c:>11}" for c in columns)
              + f" {'scored':>7} {'new':>7} {'secs':>6}")
    lines = [header, "-" * len(header)]
    for name in args.datasets:
        dataset = load_dataset(name, dataset_dir(name, args.data_root))
        table[name] = run_baselines(
            dataset.events, dataset.test_start, catalog_size=dataset.catalog_size, baselines=baselines
        )
        for model, m in table[name].items():
            values = " ".join(f"{m[c]:11.4f}" for c in columns)
            lines.append(f"{name:<10} {model:<7} {values} {m['scored']:7d} {m['scored_new']:7d} "
                         f"{m['seconds']:6.1f}")
    print("\n".join(lines))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_bytes(orjson.dumps(table, option=orjson.OPT_INDENT_2))
    return 0
