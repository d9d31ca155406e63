"""Where the recorded datasets come from and where this machine keeps them.

The datasets are not shipped (their terms do not allow it). Each one lives in a folder
of its own under one data directory: ``--data-dir`` on the command line, else the
``STREAMREC_DATA_DIR`` environment variable. ``streamrec datasets`` lists them with their
sources and converts one to the input event and catalog contracts.

>>> sorted(DATASET_SOURCES)
['movielens', 'taobao', 'yoochoose']
>>> DATASET_SOURCES["taobao"].files
('UserBehavior.csv',)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from connectors.datasets import DATASET_FOLDERS, _canonical_name
from streamrec.errors import DatasetError

__all__ = ["DATA_DIR_ENV", "DATASET_SOURCES", "DatasetSource", "data_root", "dataset_dir"]

#: The environment variable naming the folder that holds the dataset folders.
DATA_DIR_ENV = "STREAMREC_DATA_DIR"


@dataclass(frozen=True)
class DatasetSource:
    """One recorded dataset: its folder, the files the loader reads, where to get them."""

    name: str
    folder: str
    files: tuple[str, ...]
    what: str
    source: str
    terms: str


DATASET_SOURCES: dict[str, DatasetSource] = {
    "yoochoose": DatasetSource(
        "yoochoose", DATASET_FOLDERS["yoochoose"], ("rec15_train_full.txt", "rec15_test.txt"),
        "YooChoose (RecSys Challenge 2015) clicks, the RSC15 1/64 split of session-rec: "
        "99,943 training and 7,299 test clicks, tab-separated SessionId ItemId CatId Time",
        "github.com/Faisalse/SessionRecGraphFusion, data/rec15/fulltrain/rec1By64/ "
        "(made with github.com/rn5l/session-rec from the RecSys Challenge 2015 data)",
        "RecSys Challenge 2015 / YOOCHOOSE terms; research use",
    ),
    "taobao": DatasetSource(
        "taobao", DATASET_FOLDERS["taobao"], ("UserBehavior.csv",),
        "Taobao UserBehavior, a contiguous 2h10m slice of 110,300 events "
        "(user_id,item_id,category_id,behavior,timestamp; no header)",
        "Alibaba Tianchi dataset 649 (tianchi.aliyun.com/dataset/649); the 2-hour slice is "
        "HotItemsAnalysis/src/main/resources/UserBehavior.csv in github.com/jason-wang1/UserBehaviorAnalysis",
        "Tianchi UserBehavior terms; research use",
    ),
    "movielens": DatasetSource(
        "movielens", DATASET_FOLDERS["movielens"], ("ml-100k.inter", "ml-100k.item", "ml-100k.user"),
        "MovieLens-100K: 100,000 ratings, genres per movie, age/gender/occupation per user, "
        "as RecBole atomic files",
        "grouplens.org/datasets/movielens/100k/ (RecBole's atomic files: "
        "github.com/RUCAIBox/RecBole, dataset/ml-100k/)",
        "GroupLens terms: research use, cite Harper & Konstan 2015, no redistribution",
    ),
}


def data_root(data_dir: str | Path | None = None) -> Path:
    """The folder that holds the dataset folders: ``data_dir``, else ``$STREAMREC_DATA_DIR``."""
    chosen = data_dir if data_dir not in (None, "") else os.environ.get(DATA_DIR_ENV, "")
    if not chosen:
        msg = (f"no data directory: pass --data-dir DIR or set {DATA_DIR_ENV} to the folder that "
               f"holds {', '.join(f + '/' for f in DATASET_FOLDERS.values())} "
               "(`streamrec datasets` says where to get each one)")
        raise DatasetError(msg)
    return Path(chosen).expanduser()


def dataset_dir(name: str, data_dir: str | Path | None = None) -> Path:
    """The folder of dataset ``name``, checked to hold the files its loader reads.

    ``data_dir`` may be the dataset's own folder or the folder above it.
    """
    source = DATASET_SOURCES[_canonical_name(name)]
    root = data_root(data_dir)
    folder = root / source.folder if (root / source.folder).is_dir() else root
    missing = [f for f in source.files if not (folder / f).is_file()]
    if missing:
        msg = (f"dataset {source.name!r}: {', '.join(missing)} not found in {str(folder)!r}. "
               f"Put the files in {str(root / source.folder)!r}; get them from {source.source} "
               f"({source.terms}). `streamrec datasets` lists every dataset.")
        raise DatasetError(msg)
    return folder
