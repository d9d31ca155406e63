"""Write the small dataset files the tests read, in the three recorded formats.

The recorded datasets' terms do not allow copying them into this repository, so these
files are generated: synthetic shop traffic (``workloads.traffic``, seeded) written in
the exact file formats of YooChoose (RSC15 1/64), Taobao UserBehavior and MovieLens-100K
(RecBole atomic files). The output depends only on the constants below; run
``python tests/data/make_test_data.py`` from the repository root to write them again.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

__all__ = ["write_all"]

HERE = Path(__file__).resolve().parent
START_TS = 1_411_430_400.0  # 2014-09-23 00:00 UTC, the first day of the RSC15 slice
TAOBAO_TYPES = {"view": "pv", "add_to_cart": "cart", "wishlist": "fav", "purchase": "buy"}
GENRES = ["Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Drama", "Horror",
          "Romance", "Sci-Fi", "Thriller"]
OCCUPATIONS = ["student", "engineer", "educator", "technician", "writer", "retired", "other"]


def _traffic(n_events: int, seed: int, **kw) -> list[dict]:
    from workloads.traffic import TrafficConfig, generate_events

    cfg = TrafficConfig(seed=seed, start_ts=START_TS, consent_share=0.0, **kw)
    return list(generate_events(cfg, n_events))


def _ids(values) -> dict[str, int]:
    """A stable integer per distinct string, in order of first appearance."""
    return {v: k + 1 for k, v in enumerate(dict.fromkeys(values))}


def _yoochoose_category(item: int, category: int) -> int:
    """Category code as in YooChoose: 0 (unknown) for some items, else the category."""
    return 0 if item % 9 == 0 else category


def write_yoochoose(folder: Path) -> None:
    """Sessions of clicks; the last fifth of time is the test file (only items seen before)."""
    clicks = [e for e in _traffic(110_000, seed=11, n_users=1500, n_items=600, n_categories=12)
              if e["type"] == "click"]
    sessions = _ids(e["session_id"] for e in clicks)
    items = _ids(e["item_id"] for e in clicks)
    categories = _ids(e["category"] for e in clicks)
    by_session: dict[int, list[dict]] = {}
    for event in clicks:
        by_session.setdefault(sessions[event["session_id"]], []).append(event)
    split = clicks[0]["ts"] + 0.8 * (clicks[-1]["ts"] - clicks[0]["ts"])
    train, test, seen = [], [], set()
    for sid, events in sorted(by_session.items(), key=lambda kv: kv[1][0]["ts"]):
        if len(events) < 2:  # RSC15 keeps sessions of two clicks or more
            continue
        rows = [(sid, items[e["item_id"]], _yoochoose_category(items[e["item_id"]], categories[e["category"]]), e["ts"])
                for e in events]
        if events[0]["ts"] < split:
            train += rows
            seen.update(r[1] for r in rows)
        elif all(r[1] in seen for r in rows):
            test += rows
    header = "SessionId\tItemId\tCatId\tTime\n"
    for name, rows in (("rec15_train_full.txt", train), ("rec15_test.txt", test)):
        body = "".join(f"{s}\t{i}\t{c}\t{t:.3f}\n" for s, i, c, t in rows)
        (folder / name).write_text(header + body)


def write_taobao(folder: Path) -> None:
    """User behaviour rows (pv/cart/fav/buy), no header, sorted by time, whole seconds."""
    events = [e for e in _traffic(12_000, seed=12, n_users=800, n_items=900, n_categories=15)
              if e["type"] in TAOBAO_TYPES]
    users, items = _ids(e["user_id"] for e in events), _ids(e["item_id"] for e in events)
    categories = _ids(e["category"] for e in events)
    body = "".join(
        f"{users[e['user_id']]},{items[e['item_id']]},{categories[e['category']]},"
        f"{TAOBAO_TYPES[e['type']]},{int(e['ts'])}\n"
        for e in events
    )
    (folder / "UserBehavior.csv").write_text(body)


def write_movielens(folder: Path) -> None:
    """Ratings, items with genres and release years, users with age/gender/occupation."""
    rng = np.random.default_rng(13)
    ratings = [e for e in _traffic(40_000, seed=13, n_users=200, n_items=300, n_categories=len(GENRES),
                                   sessions_per_user_per_day=0.2)
               if e["type"] in ("view", "purchase")]
    seen: set[tuple[str, str]] = set()
    rows = []
    for event in ratings:  # one rating per user and movie, as in MovieLens
        key = (event["user_id"], event["item_id"])
        if key not in seen:
            seen.add(key)
            rows.append(event)
    users, items = _ids(e["user_id"] for e in rows), _ids(e["item_id"] for e in rows)
    genre_of = {cat: GENRES[k % len(GENRES)] for k, cat in enumerate(dict.fromkeys(e["category"] for e in rows))}
    stars = rng.choice([1, 2, 3, 4, 5], len(rows), p=[0.06, 0.11, 0.27, 0.34, 0.22])
    inter = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n" + "".join(
        f"{users[e['user_id']]}\t{items[e['item_id']]}\t{s}\t{int(e['ts'])}\n" for e, s in zip(rows, stars.tolist())
    )
    (folder / "ml-100k.inter").write_text(inter)
    item_genre = {items[e["item_id"]]: genre_of[e["category"]] for e in rows}
    item_lines = []
    for item, genre in sorted(item_genre.items()):
        extra = GENRES[int(rng.integers(len(GENRES)))]
        genres = genre if extra == genre else f"{genre} {extra}"
        year = str(int(rng.integers(1930, 1998))) if item % 50 else "unkonwn"  # MovieLens' own placeholder
        item_lines.append(f"{item}\tMovie {item}\t{year}\t{genres}\n")
    (folder / "ml-100k.item").write_text(
        "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n" + "".join(item_lines))
    user_lines = [
        f"{user}\t{int(rng.integers(7, 74))}\t{'MF'[int(rng.integers(2))]}\t"
        f"{OCCUPATIONS[int(rng.integers(len(OCCUPATIONS)))]}\t{10000 + user}\n"
        for user in sorted(users.values())
    ]
    (folder / "ml-100k.user").write_text(
        "user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n" + "".join(user_lines))


def write_all(root: Path = HERE) -> None:
    """Write the three dataset folders under ``root``."""
    for name, writer in (("yoochoose_1_64", write_yoochoose), ("taobao_2h", write_taobao),
                         ("movielens_100k", write_movielens)):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        writer(folder)
        print(f"{folder}: " + ", ".join(f"{p.name} {p.stat().st_size:,} B" for p in sorted(folder.glob("*.*"))))


if __name__ == "__main__":
    write_all(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
