"""Tune defaults on the warm-up part of a dataset only, never on its test part.

The warm-up events (before the dataset's test start) are split again, in one of two ways:

- ``--split time`` (default): the last ``fraction`` of warm-up time is the validation window;
- ``--split sessions``: the test protocol of yoochoose (rec15) applied inside the warm-up:
  sessions whose last event falls in the last day of warm-up are held out, their events
  on items never seen before are dropped, and sessions left with fewer than 2 events are
  dropped; scoring starts at the first held-out event (so the few warm-up events of
  other sessions after it are scored too: 24 of 4,378 on yoochoose). Needs session ids.

The test part is never loaded.

    python -m evaluation.tune --dataset yoochoose --set STREAMREC_DIVERSITY=0,0.3
    python -m evaluation.tune --dataset yoochoose --split sessions --baselines
"""

from __future__ import annotations

import argparse
import collections
import itertools
import os
import sys

from connectors.datasets import DATASET_FOLDERS, load_dataset
from connectors.dataset_sources import dataset_dir
from streamrec.eval_cli import format_table, run_eval
from streamrec.settings import Settings

__all__ = ["session_validation_split", "validation_split"]


def validation_split(name: str, data_dir=None, fraction: float = 0.2):
    """(warm-up events only, items, validation start)."""
    ds = load_dataset(name, dataset_dir(name, data_dir))
    warm = [e for e in ds.events if e["ts"] < ds.test_start]
    first, last = warm[0]["ts"], warm[-1]["ts"]
    return warm, ds.items, first + (1.0 - fraction) * (last - first)


def session_validation_split(name: str, data_dir=None, days: float = 1.0):
    """(warm-up events only, items, validation start), rec15-style held-out sessions."""
    ds = load_dataset(name, dataset_dir(name, data_dir))
    warm = [e for e in ds.events if e["ts"] < ds.test_start]
    return _session_split(warm, ds.items, days)


def _session_split(warm: list[dict], items, days: float):
    if not any(e.get("session_id") for e in warm):
        raise SystemExit("--split sessions needs session ids in the events (yoochoose has "
                         "them); use --split time for this dataset")

    def session(e):
        return e.get("session_id") or e["user_id"]

    end = max(e["ts"] for e in warm)
    last = collections.defaultdict(float)
    for e in warm:
        last[session(e)] = max(last[session(e)], e["ts"])
    held = {s for s, t in last.items() if t >= end - days * 86400.0}
    train = [e for e in warm if session(e) not in held]
    known = {e.get("item_id") for e in train}
    val = [e for e in warm if session(e) in held and e.get("item_id") is not None
           and e["item_id"] in known]
    length = collections.Counter(session(e) for e in val)
    val = [e for e in val if length[session(e)] >= 2]
    if not val:
        raise SystemExit("no held-out session of 2+ known items in the last day of warm-up")
    start = min(e["ts"] for e in val)
    return sorted(train + val, key=lambda e: e["ts"]), items, start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True, choices=list(DATASET_FOLDERS))
    parser.add_argument("--set", action="append", default=[],
                        help="VAR=v1,v2,...: grid over an environment setting")
    parser.add_argument("--data-dir", help="the folder holding the dataset folders (default $STREAMREC_DATA_DIR)")
    parser.add_argument("--baselines", action="store_true")
    parser.add_argument("--split", choices=["time", "sessions"], default="time",
                        help="last 20%% of warm-up time, or held-out sessions of its last day")
    args = parser.parse_args(argv)
    if args.split == "sessions":
        events, items, val_start = session_validation_split(args.dataset, args.data_dir)
    else:
        events, items, val_start = validation_split(args.dataset, args.data_dir)
    grid = [(kv.split("=", 1)[0], kv.split("=", 1)[1].split(",")) for kv in args.set]
    for combo in itertools.product(*[vals for _, vals in grid]) if grid else [()]:
        env = {name: v for (name, _), v in zip(grid, combo)}
        os.environ.update(env)
        Settings.from_env()  # fail fast on a bad value
        report = run_eval(f"{args.dataset}-val {env}", events, items, val_start,
                          baselines=args.baselines, progress=False)
        print(format_table(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
