"""Loaders for the recorded interaction datasets, and JSONL event files.

Each loader turns one dataset folder (see :mod:`connectors.dataset_sources`) into
input events of the documented contract (docs/contracts.md), a catalog of items and, where the data
has them, user attributes. Dataset files are read from a path, never copied.

>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "events.jsonl"
>>> write_events_jsonl(path, [{"event_id": "e-1", "ts": 1.5, "user_id": "u1", "type": "view"}])
1
>>> [e["event_id"] for e in read_events_jsonl(path)]
['e-1']
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path

import orjson

from streamrec.errors import DatasetError

__all__ = [
    "DATASET_FOLDERS",
    "Dataset",
    "load_dataset",
    "read_events_jsonl",
    "write_events_jsonl",
]

#: Canonical dataset name -> folder name under the data directory.
DATASET_FOLDERS: dict[str, str] = {
    "yoochoose": "yoochoose_1_64",
    "taobao": "taobao_2h",
    "movielens": "movielens_100k",
}

_TAOBAO_TYPES = {"pv": "view", "cart": "add_to_cart", "fav": "wishlist", "buy": "purchase"}
# (lower bound, label), checked from the top; MovieLens-100K ages run 7..73.
_AGE_BANDS = ((65, "65+"), (55, "55-64"), (45, "45-54"), (35, "35-44"), (25, "25-34"), (18, "18-24"))


@dataclass(frozen=True)
class Dataset:
    """One loaded dataset: time-ordered input events, item catalog, user attributes.

    ``test_start`` is the default split: events with ``ts >= test_start`` are scored,
    earlier ones only warm the models.
    """

    name: str
    events: list[dict]
    items: list[dict]
    users: dict[str, dict]
    test_start: float

    @property
    def catalog_size(self) -> int:
        """Distinct item ids in the dataset (the coverage denominator)."""
        return len(self.items)


def load_dataset(name: str, data_dir: str | Path) -> Dataset:
    """Load dataset ``name`` ("yoochoose", "taobao" or "movielens") from its folder.

    ``data_dir`` is the dataset folder itself (e.g. ``.../datasets/taobao_2h``); the
    parent ``datasets`` folder is accepted too.
    """
    canonical = _canonical_name(name)
    folder = Path(data_dir)
    if not folder.is_dir():
        raise DatasetError(f"load_dataset({name!r}): data_dir {str(folder)!r} is not a directory")
    if (folder / DATASET_FOLDERS[canonical]).is_dir():
        folder = folder / DATASET_FOLDERS[canonical]
    return _LOADERS[canonical](folder)


def read_events_jsonl(path: str | Path) -> Iterator[dict]:
    """Yield one event dict per non-blank line of a JSONL file."""
    path = Path(path)
    try:
        handle = path.open("rb")
    except OSError as ex:
        msg = f"read_events_jsonl: cannot open {str(path)!r}: {ex.strerror}"
        raise DatasetError(msg) from ex
    with handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                event = orjson.loads(line)
            except orjson.JSONDecodeError as ex:
                msg = f"read_events_jsonl: {path.name} line {line_no} is not valid JSON"
                raise DatasetError(msg) from ex
            if not isinstance(event, dict):
                msg = f"read_events_jsonl: {path.name} line {line_no} is not a JSON object"
                raise DatasetError(msg)
            yield event


def write_events_jsonl(path: str | Path, events: Iterable[dict]) -> int:
    """Write events as JSONL (one object per line); return how many were written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    dumps, option = orjson.dumps, orjson.OPT_APPEND_NEWLINE
    count = 0
    with path.open("wb") as handle:
        batch: list[bytes] = []
        for event in events:
            batch.append(dumps(event, option=option))
            if len(batch) >= 10_000:
                handle.write(b"".join(batch))
                count += len(batch)
                batch.clear()
        handle.write(b"".join(batch))
        count += len(batch)
    return count


# --- per-dataset loaders ----------------------------------------------------------


def _load_yoochoose(folder: Path) -> Dataset:
    header = ["SessionId", "ItemId", "CatId", "Time"]
    events: list[dict] = []
    test_start = math.inf
    item_categories: dict[str, Counter] = {}
    for file_name in ("rec15_train_full.txt", "rec15_test.txt"):
        for row_no, (session, item, category, time) in _read_rows(folder / file_name, "\t", header):
            ts = _parse_float(time, file_name, row_no)
            event = {
                "event_id": f"{file_name}:{row_no}",
                "ts": ts,
                "user_id": session,
                "session_id": session,
                "type": "click",
                "item_id": item,
                "value": 1.0,
            }
            if category != "0":  # 0 = unknown category in YooChoose
                event["category"] = category
                item_categories.setdefault(item, Counter())[category] += 1
            events.append(event)
            if file_name == "rec15_test.txt":
                test_start = min(test_start, ts)
    if not events or test_start == math.inf:
        raise DatasetError(f"yoochoose: no events in {str(folder)!r}")
    events.sort(key=itemgetter("ts"))  # stable: equal times keep file order
    items = [
        {
            "item_id": item,
            "category": _most_common(item_categories.get(item)),
            "tags": [],
            "available": True,
        }
        for item in _first_seen(events)
    ]
    return Dataset("yoochoose", events, items, {}, test_start)


def _load_taobao(folder: Path) -> Dataset:
    file_name = "UserBehavior.csv"
    events: list[dict] = []
    item_category: dict[str, str] = {}
    for row_no, (user, item, category, behavior, time) in _read_rows(folder / file_name, ",", None, 5):
        event_type = _TAOBAO_TYPES.get(behavior)
        if event_type is None:
            msg = f"taobao: {file_name} row {row_no}: unknown behavior {behavior!r} (expected pv/cart/fav/buy)"
            raise DatasetError(msg)
        events.append(
            {
                "event_id": f"{file_name}:{row_no}",
                "ts": _parse_float(time, file_name, row_no),
                "user_id": user,
                "type": event_type,
                "item_id": item,
                "value": 1.0,
                "category": category,
            }
        )
        item_category.setdefault(item, category)
    if not events:
        raise DatasetError(f"taobao: no events in {str(folder / file_name)!r}")
    events.sort(key=itemgetter("ts"))
    items = [
        {"item_id": item, "category": item_category[item], "tags": [], "available": True}
        for item in _first_seen(events)
    ]
    return Dataset("taobao", events, items, {}, _fraction_split(events, 0.75))


def _load_movielens(folder: Path) -> Dataset:
    items: list[dict] = []
    item_category: dict[str, str | None] = {}
    item_header = ["item_id", "movie_title", "release_year", "class"]
    for _, (item, title, year, genres_text) in _read_rows(folder / "ml-100k.item", "\t", item_header):
        # "unknown" is MovieLens' genre for "no genre"; item 267 has placeholder title/year.
        genres = [g for g in genres_text.split() if g != "unknown"]
        category = genres[0] if genres else None
        item_category[item] = category
        items.append(
            {
                "item_id": item,
                "category": category,
                "tags": genres,
                "title": title if title != "unkonwn" else None,
                "available": True,
                "attributes": {"release_year": int(year) if year.isdigit() else None},
            }
        )

    users: dict[str, dict] = {}
    user_header = ["user_id", "age", "gender", "occupation", "zip_code"]
    for row_no, (user, age, gender, occupation, _zip) in _read_rows(folder / "ml-100k.user", "\t", user_header):
        if not age.isdigit():
            raise DatasetError(f"movielens: ml-100k.user row {row_no}: age {age!r} is not a whole number")
        users[user] = {"age_band": _age_band(int(age)), "gender": gender, "occupation": occupation}

    file_name = "ml-100k.inter"
    events: list[dict] = []
    inter_header = ["user_id", "item_id", "rating", "timestamp"]
    for row_no, (user, item, rating, time) in _read_rows(folder / file_name, "\t", inter_header):
        event = {
            "event_id": f"{file_name}:{row_no}",
            "ts": _parse_float(time, file_name, row_no),
            "user_id": user,
            "type": "rating",
            "item_id": item,
            "value": _parse_float(rating, file_name, row_no),
        }
        category = item_category.get(item)
        if category is not None:
            event["category"] = category
        attrs = users.get(user)
        if attrs is not None:
            event["context"] = {"user_attrs": dict(attrs)}  # a copy: events must not alias
        events.append(event)
    if not events:
        raise DatasetError(f"movielens: no events in {str(folder / file_name)!r}")
    events.sort(key=itemgetter("ts"))
    known = set(item_category)
    for item in _first_seen(events):  # rated items missing from ml-100k.item still belong to the catalog
        if item not in known:
            items.append({"item_id": item, "category": None, "tags": [], "available": True})
    return Dataset("movielens", events, items, users, _fraction_split(events, 0.8))


_LOADERS: dict[str, Callable[[Path], Dataset]] = {
    "yoochoose": _load_yoochoose,
    "taobao": _load_taobao,
    "movielens": _load_movielens,
}


# --- helpers ----------------------------------------------------------------------


def _canonical_name(name: str) -> str:
    key = name.strip().lower()
    for canonical, folder in DATASET_FOLDERS.items():
        if key in (canonical, folder):
            return canonical
    known = ", ".join(sorted(DATASET_FOLDERS))
    raise DatasetError(f"load_dataset: unknown dataset {name!r}; known: {known}")


def _read_rows(
    path: Path, delimiter: str, header: list[str] | None, n_fields: int | None = None
) -> Iterator[tuple[int, list[str]]]:
    """Yield (1-based data row number, fields); check the header and the field count.

    RecBole headers carry a type suffix ("user_id:token"), which is ignored.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as ex:
        msg = f"dataset file {str(path)!r} cannot be read: {ex.strerror}"
        raise DatasetError(msg) from ex
    except UnicodeDecodeError as ex:
        msg = f"dataset file {str(path)!r} is not UTF-8 text"
        raise DatasetError(msg) from ex
    lines = text.splitlines()
    if header is not None:
        found = [column.split(":", 1)[0] for column in lines[0].split(delimiter)] if lines else []
        if found != header:
            msg = f"{path.name}: header {found!r} does not match the documented {header!r}"
            raise DatasetError(msg)
        lines = lines[1:]
        n_fields = len(header)
    for row_no, line in enumerate(lines, start=1):
        if not line:
            continue
        fields = line.split(delimiter)
        if len(fields) != n_fields:
            msg = f"{path.name} row {row_no}: expected {n_fields} fields, found {len(fields)}: {line[:80]!r}"
            raise DatasetError(msg)
        yield row_no, fields


def _parse_float(text: str, file_name: str, row_no: int) -> float:
    try:
        return float(text)
    except ValueError as ex:
        msg = f"{file_name} row {row_no}: {text!r} is not a number"
        raise DatasetError(msg) from ex


def _fraction_split(events: list[dict], fraction: float) -> float:
    first, last = events[0]["ts"], events[-1]["ts"]
    return first + fraction * (last - first)


def _first_seen(events: list[dict]) -> list[str]:
    return list(dict.fromkeys(event["item_id"] for event in events))


def _most_common(counter: Counter | None) -> str | None:
    return counter.most_common(1)[0][0] if counter else None


def _age_band(age: int) -> str:
    for lower, label in _AGE_BANDS:
        if age >= lower:
            return label
    return "<18"
