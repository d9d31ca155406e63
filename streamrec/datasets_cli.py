"""`streamrec datasets`: where each recorded dataset comes from, whether this machine has
it, and its conversion to input events and a catalog (JSONL, the documented contracts)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["register", "cmd_datasets"]


def register(sub) -> None:
    p = sub.add_parser("datasets", help="list the recorded datasets, or convert one to JSONL events")
    p.add_argument("--data-dir", help="the folder holding the dataset folders (default $STREAMREC_DATA_DIR)")
    p.add_argument("--convert", metavar="NAME", choices=["yoochoose", "taobao", "movielens"],
                   help="convert this dataset to events.jsonl and catalog.jsonl")
    p.add_argument("--out", default=".", help="folder for the converted files (default: here)")
    p.set_defaults(func=cmd_datasets)


def _status(name: str, data_dir: str | None) -> str:
    from connectors.dataset_sources import dataset_dir
    from streamrec.errors import DatasetError

    try:
        return f"found in {dataset_dir(name, data_dir)}"
    except DatasetError:
        return "not found"


def cmd_datasets(args) -> int:
    from connectors.dataset_sources import DATA_DIR_ENV, DATASET_SOURCES, data_root, dataset_dir
    from connectors.datasets import load_dataset, write_events_jsonl
    from streamrec.errors import DatasetError

    if args.convert:
        ds = load_dataset(args.convert, dataset_dir(args.convert, args.data_dir))
        out = Path(args.out)
        events = write_events_jsonl(out / f"{ds.name}-events.jsonl", ds.events)
        items = write_events_jsonl(out / f"{ds.name}-catalog.jsonl", ds.items)
        print(f"{ds.name}: {events:,} events -> {out / f'{ds.name}-events.jsonl'}, "
              f"{items:,} items -> {out / f'{ds.name}-catalog.jsonl'}; "
              f"scored from ts {ds.test_start:.3f} (streamrec eval --test-start)")
        return 0
    try:
        root = str(data_root(args.data_dir))
    except DatasetError:
        root = None
    print(f"data directory: {root or f'not set (--data-dir or {DATA_DIR_ENV})'}")
    for name, src in DATASET_SOURCES.items():
        status = _status(name, args.data_dir) if root else "not found"
        print(f"\n{name} ({src.folder}/: {', '.join(src.files)}): {status}\n"
              f"  {src.what}\n  source: {src.source}\n  terms:  {src.terms}")
    return 0
