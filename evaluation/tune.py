"""Tune defaults on the warm-up part of a dataset only, never on its test part.

The warm-up events (before the dataset's test start) are split again by time: the last
``fraction`` of warm-up time is the validation window. The test part is not loaded.

    python -m evaluation.tune --dataset yoochoose --set STREAMREC_DIVERSITY=0,0.3
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys

from connectors.datasets import DATASET_FOLDERS, load_dataset
from streamrec.eval_cli import DEFAULT_DATA_ROOT, format_table, run_eval
from streamrec.settings import Settings

__all__ = ["validation_split"]


def validation_split(name: str, data_dir=None, fraction: float = 0.2):
    """(warm-up events only, items, validation start)."""
    ds = load_dataset(name, data_dir or DEFAULT_DATA_ROOT / DATASET_FOLDERS[name])
    warm = [e for e in ds.events if e["ts"] < ds.test_start]
    first, last = warm[0]["ts"], warm[-1]["ts"]
    return warm, ds.items, first + (1.0 - fraction) * (last - first)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True, choices=list(DATASET_FOLDERS))
    parser.add_argument("--set", action="append", default=[],
                        help="VAR=v1,v2,...: grid over an environment setting")
    parser.add_argument("--baselines", action="store_true")
    args = parser.parse_args(argv)
    events, items, val_start = validation_split(args.dataset)
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
