"""Dataset loaders: the generated files in tests/data (counts from their generator) and
hand-made files. tests/data/README.md says how the files were made and why."""

from datetime import datetime, timezone
from pathlib import Path

import pytest

from connectors.datasets import DATASET_FOLDERS, load_dataset, read_events_jsonl, write_events_jsonl
from streamrec.errors import DatasetError

TEST_DATA = Path(__file__).resolve().parent / "data"
EVENT_TYPES = {"view", "click", "add_to_cart", "wishlist", "purchase", "rating"}


@pytest.fixture(scope="module")
def yoochoose():
    return load_dataset("yoochoose", TEST_DATA / DATASET_FOLDERS["yoochoose"])


@pytest.fixture(scope="module")
def taobao():
    return load_dataset("taobao", TEST_DATA / DATASET_FOLDERS["taobao"])


@pytest.fixture(scope="module")
def movielens():
    return load_dataset("movielens", TEST_DATA / DATASET_FOLDERS["movielens"])


def _utc(text):
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp()


def _check_contract(dataset):
    events = dataset.events
    assert len({e["event_id"] for e in events}) == len(events)
    for event in events:
        assert type(event["ts"]) is float
        assert isinstance(event["user_id"], str) and isinstance(event["item_id"], str)
        assert event["type"] in EVENT_TYPES
        assert isinstance(event.get("category", ""), str)
    assert all(a["ts"] <= b["ts"] for a, b in zip(events, events[1:]))
    # stable sort: equal times keep the file order
    for a, b in zip(events, events[1:]):
        file_a, row_a = a["event_id"].rsplit(":", 1)
        file_b, row_b = b["event_id"].rsplit(":", 1)
        if a["ts"] == b["ts"] and file_a == file_b:
            assert int(row_a) < int(row_b)
    item_ids = [item["item_id"] for item in dataset.items]
    assert len(set(item_ids)) == len(item_ids) == dataset.catalog_size
    assert set(item_ids) == {e["item_id"] for e in events}
    assert all(item["available"] is True and isinstance(item["tags"], list) for item in dataset.items)
    assert events[0]["ts"] < dataset.test_start < events[-1]["ts"]


def test_yoochoose_counts_and_split(yoochoose):
    _check_contract(yoochoose)
    events = yoochoose.events
    train = [e for e in events if e["event_id"].startswith("rec15_train_full.txt:")]
    test = [e for e in events if e["event_id"].startswith("rec15_test.txt:")]
    assert (len(train), len(test)) == (10_701, 2_751)
    assert len({e["session_id"] for e in train}) == 3_949
    assert len({e["session_id"] for e in test}) == 1_008
    assert len({e["item_id"] for e in train}) == 596
    assert len({e["item_id"] for e in test}) == 535
    assert yoochoose.test_start == min(e["ts"] for e in test)
    assert all(e["user_id"] == e["session_id"] and e["type"] == "click" for e in events)
    assert len({e["category"] for e in events if "category" in e}) == 12  # CatId 0 = unknown is left out
    assert sum("category" not in e for e in events) == 1_342
    assert yoochoose.users == {}


def test_taobao_counts_and_types(taobao):
    _check_contract(taobao)
    events = taobao.events
    assert len(events) == 3_346
    assert len({e["user_id"] for e in events}) == 490
    assert taobao.catalog_size == 730
    assert len({e["category"] for e in events}) == 15
    counts = {t: 0 for t in ("view", "add_to_cart", "wishlist", "purchase")}
    for event in events:
        counts[event["type"]] += 1
    assert counts == {"view": 2_997, "add_to_cart": 164, "wishlist": 117, "purchase": 68}
    assert events[0]["ts"] == _utc("2014-09-23T00:02:23") and events[-1]["ts"] == _utc("2014-09-24T21:02:08")
    assert events[0]["event_id"] == "UserBehavior.csv:1"
    first, last = events[0]["ts"], events[-1]["ts"]
    assert taobao.test_start == pytest.approx(first + 0.75 * (last - first))
    assert all("session_id" not in e for e in events)


def test_movielens_counts_attributes_and_genres(movielens):
    _check_contract(movielens)
    events = movielens.events
    assert len(events) == 3_571
    assert len({e["user_id"] for e in events}) == len(movielens.users) == 191
    assert movielens.catalog_size == 300
    assert {e["value"] for e in events} == {1.0, 2.0, 3.0, 4.0, 5.0}
    assert datetime.fromtimestamp(events[0]["ts"], timezone.utc).date().isoformat() == "2014-09-23"
    assert datetime.fromtimestamp(events[-1]["ts"], timezone.utc).date().isoformat() == "2015-01-28"
    first, last = events[0]["ts"], events[-1]["ts"]
    assert movielens.test_start == pytest.approx(first + 0.8 * (last - first))
    assert movielens.users["1"] == {"age_band": "<18", "gender": "F", "occupation": "other"}
    assert movielens.users["2"] == {"age_band": "45-54", "gender": "M", "occupation": "engineer"}
    for event in events:
        assert event["context"]["user_attrs"] == movielens.users[event["user_id"]]
    assert events[0]["context"]["user_attrs"] is not movielens.users[events[0]["user_id"]]
    first_movie = next(item for item in movielens.items if item["item_id"] == "1")
    assert first_movie["title"] == "Movie 1" and first_movie["category"] == "Action"
    assert first_movie["tags"] == ["Action", "Horror"]
    assert first_movie["attributes"] == {"release_year": 1994}
    placeholder = next(item for item in movielens.items if item["item_id"] == "50")
    assert placeholder["attributes"] == {"release_year": None}  # MovieLens' "unkonwn" year
    assert next(e for e in events if e["item_id"] == "1")["category"] == "Action"


# --- hand-made folders -------------------------------------------------------------


def _write(folder, name, text):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text)


def _tiny_movielens(folder, inter_rows):
    _write(folder, "ml-100k.inter", "user_id:token\titem_id:token\trating:float\ttimestamp:float\n" + inter_rows)
    _write(
        folder,
        "ml-100k.item",
        "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
        "1\tToy Story\t1995\tAnimation Comedy\n2\tMystery Film\tunkonwn\tunknown\n",
    )
    _write(
        folder,
        "ml-100k.user",
        "user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n"
        "7\t17\tF\tstudent\t00000\n8\t65\tM\tretired\t11111\n",
    )


def test_tiny_movielens_stable_order_and_split(tmp_path):
    _tiny_movielens(tmp_path, "8\t2\t3\t200\n7\t1\t5\t100\n8\t1\t4\t100\n")
    data = load_dataset("movielens", tmp_path)
    assert [e["event_id"] for e in data.events] == ["ml-100k.inter:2", "ml-100k.inter:3", "ml-100k.inter:1"]
    assert data.test_start == 100 + 0.8 * 100
    assert data.users == {
        "7": {"age_band": "<18", "gender": "F", "occupation": "student"},
        "8": {"age_band": "65+", "gender": "M", "occupation": "retired"},
    }
    unknown = data.items[1]
    assert unknown["category"] is None and unknown["tags"] == [] and unknown["attributes"]["release_year"] is None
    assert "category" not in data.events[2]
    assert data.events[0] == {
        "event_id": "ml-100k.inter:2",
        "ts": 100.0,
        "user_id": "7",
        "type": "rating",
        "item_id": "1",
        "value": 5.0,
        "category": "Animation",
        "context": {"user_attrs": {"age_band": "<18", "gender": "F", "occupation": "student"}},
    }


def test_tiny_yoochoose_and_taobao(tmp_path):
    header = "SessionId\tItemId\tCatId\tTime\n"
    _write(tmp_path / "yoochoose_1_64", "rec15_train_full.txt", header + "1\t10\t0\t5.5\n1\t11\t3\t6.0\n")
    _write(tmp_path / "yoochoose_1_64", "rec15_test.txt", header + "2\t10\t2\t9.0\n2\t10\t2\t8.0\n")
    data = load_dataset("yoochoose", tmp_path)  # the parent folder is accepted too
    assert [e["ts"] for e in data.events] == [5.5, 6.0, 8.0, 9.0]
    assert data.test_start == 8.0
    assert "category" not in data.events[0] and data.events[1]["category"] == "3"
    assert data.items[0] == {"item_id": "10", "category": "2", "tags": [], "available": True}

    _write(tmp_path / "tb", "UserBehavior.csv", "1,100,7,pv,10\n2,101,8,buy,20\n1,100,7,fav,30\n")
    data = load_dataset("taobao_2h", tmp_path / "tb")
    assert [e["type"] for e in data.events] == ["view", "purchase", "wishlist"]
    assert data.test_start == 25.0
    assert data.events[1] == {
        "event_id": "UserBehavior.csv:2",
        "ts": 20.0,
        "user_id": "2",
        "type": "purchase",
        "item_id": "101",
        "value": 1.0,
        "category": "8",
    }


@pytest.mark.parametrize(
    ("name", "files", "message"),
    [
        ("taobao", {"UserBehavior.csv": "1,100,7,click,10\n"}, "unknown behavior"),
        ("taobao", {"UserBehavior.csv": "1,100,7,pv\n"}, "expected 5 fields"),
        ("taobao", {"UserBehavior.csv": "1,100,7,pv,soon\n"}, "not a number"),
        ("taobao", {}, "cannot be read"),
        ("yoochoose", {"rec15_train_full.txt": "Session\tItem\tCat\tTime\n1\t2\t0\t3\n"}, "header"),
        ("movies", {}, "unknown dataset"),
    ],
)
def test_bad_files_raise_dataset_error(tmp_path, name, files, message):
    for file_name, text in files.items():
        _write(tmp_path, file_name, text)
    with pytest.raises(DatasetError, match=message):
        load_dataset(name, tmp_path)


def test_missing_folder_raises(tmp_path):
    with pytest.raises(DatasetError, match="not a directory"):
        load_dataset("taobao", tmp_path / "nope")


def test_jsonl_round_trip_and_errors(tmp_path):
    events = [
        {"event_id": "e-1", "ts": 1.25, "user_id": "u", "type": "view", "item_id": "p", "context": {"page": "pdp"}},
        {"event_id": "e-2", "ts": 2.0, "user_id": "ü", "type": "erase"},
    ]
    path = tmp_path / "out" / "events.jsonl"
    assert write_events_jsonl(path, iter(events)) == 2
    assert list(read_events_jsonl(path)) == events
    path.write_bytes(path.read_bytes() + b"\n   \n")  # blank lines are skipped
    assert len(list(read_events_jsonl(path))) == 2
    path.write_bytes(path.read_bytes() + b"{not json\n")
    with pytest.raises(DatasetError, match="line 5"):
        list(read_events_jsonl(path))
    path.write_bytes(b"[1, 2]\n")
    with pytest.raises(DatasetError, match="not a JSON object"):
        list(read_events_jsonl(path))
    with pytest.raises(DatasetError, match="cannot open"):
        list(read_events_jsonl(tmp_path / "missing.jsonl"))


# --- data directory and `streamrec datasets` ------------------------------------------


def test_dataset_dir_names_the_setting_and_the_source(tmp_path, monkeypatch):
    from connectors.dataset_sources import DATA_DIR_ENV, dataset_dir

    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    with pytest.raises(DatasetError, match=f"--data-dir DIR or set {DATA_DIR_ENV}"):
        dataset_dir("taobao")
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    with pytest.raises(DatasetError, match="UserBehavior.csv not found.*tianchi.aliyun.com/dataset/649"):
        dataset_dir("taobao")
    monkeypatch.setenv(DATA_DIR_ENV, str(TEST_DATA))
    assert dataset_dir("taobao_2h") == TEST_DATA / "taobao_2h"
    # the dataset's own folder is accepted too, and --data-dir wins over the variable
    assert dataset_dir("movielens", TEST_DATA / "movielens_100k") == TEST_DATA / "movielens_100k"


def test_datasets_command_lists_and_converts(tmp_path, monkeypatch, capsys):
    from streamrec.cli import main

    monkeypatch.delenv("STREAMREC_DATA_DIR", raising=False)
    assert main(["datasets"]) == 0
    listing = capsys.readouterr().out
    assert "data directory: not set (--data-dir or STREAMREC_DATA_DIR)" in listing
    assert listing.count("not found") == 3 and "grouplens.org" in listing

    assert main(["datasets", "--data-dir", str(TEST_DATA)]) == 0
    assert capsys.readouterr().out.count("found in ") == 3

    assert main(["datasets", "--data-dir", str(TEST_DATA), "--convert", "taobao", "--out", str(tmp_path)]) == 0
    assert "3,346 events" in capsys.readouterr().out
    events = list(read_events_jsonl(tmp_path / "taobao-events.jsonl"))
    assert events == load_dataset("taobao", TEST_DATA).events
    assert len(list(read_events_jsonl(tmp_path / "taobao-catalog.jsonl"))) == 730

    assert main(["datasets", "--data-dir", str(tmp_path), "--convert", "yoochoose"]) == 2
    assert "rec15_train_full.txt, rec15_test.txt not found" in capsys.readouterr().err
