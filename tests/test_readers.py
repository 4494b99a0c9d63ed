"""Dataset readers: facts of the genuine samples, layouts, partial data and bad input."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from dmnreid.data_prep.datasets import DATASETS, read_dataset
from dmnreid.data_prep.image_folders import read_market1501
from dmnreid.data_prep.mars import read_mars
from dmnreid.data_prep.msmt17 import LIST_FILES, read_list, read_msmt17
from dmnreid.data_prep.records import SPLITS, DatasetError, ReidDataset

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "real-reid-samples"
needs_real = pytest.mark.skipif(not REAL.is_dir(), reason=f"real samples folder {REAL} is absent")

# (pid, camera) of every Market-1501 sample image, in file name order, copied from the names.
MARKET_TRAIN = [
    (2, 1), (2, 2), (7, 2), (7, 3), (10, 3), (10, 6), (11, 3), (11, 6), (12, 1), (12, 4),
    (20, 4), (20, 4), (22, 3), (22, 5), (23, 6), (23, 6), (27, 1), (27, 2), (28, 1), (28, 3),
    (30, 1), (30, 1), (32, 3), (32, 6), (35, 4), (35, 6), (37, 2), (37, 3), (42, 3), (42, 3),
    (43, 2), (43, 6),
]
MARKET_QUERY = [
    (4, 2), (4, 6), (5, 1), (5, 2), (6, 3), (6, 6), (8, 1), (8, 6), (9, 5), (9, 6), (13, 5),
    (13, 6), (14, 1), (14, 5), (15, 2), (15, 6), (16, 2), (16, 6), (17, 2), (17, 4), (18, 4),
    (18, 5), (19, 3), (19, 5), (21, 3), (21, 6), (24, 1), (24, 6), (25, 3), (25, 6), (26, 1),
    (26, 3),
]
MARKET_GALLERY = [
    (4, 1), (4, 3), (5, 1), (5, 5), (6, 2), (6, 5), (8, 1), (8, 5), (9, 1), (9, 6), (13, 5),
    (13, 5), (14, 4), (14, 4), (15, 4), (15, 5), (16, 6), (16, 6), (17, 1), (17, 4), (18, 1),
    (18, 1), (19, 1), (19, 6), (21, 1), (21, 1), (24, 2), (24, 2), (25, 2), (25, 6), (26, 2),
    (26, 3),
]
# The MSMT17 test images on disk with their list (pid, camera), found by grepping the lists.
MSMT_QUERY = {"2744_001_12_0114noon_0960_1_ex.jpg": (2744, 12)}
MSMT_GALLERY = {
    "0168_018_14_0303morning_1118_1_ex.jpg": (168, 14),
    "0318_001_01_0303noon_0111_4_ex.jpg": (318, 1),
    "0367_010_10_0303noon_0606_2.jpg": (367, 10),
    "0434_020_07_0303noon_1785_5_ex.jpg": (434, 7),
    "0494_029_01_0303afternoon_0435_2_ex.jpg": (494, 1),
    "0514_012_05_0303afternoon_0585_1.jpg": (514, 5),
    "0720_027_01_0303afternoon_0771_4.jpg": (720, 1),
    "0771_019_01_0303afternoon_1000_9.jpg": (771, 1),
    "0917_021_15_0113morning_0174_0.jpg": (917, 15),
    "2744_037_06_0114noon_0915_0_ex.jpg": (2744, 6),
    "2790_015_05_0114afternoon_0244_1.jpg": (2790, 5),
    "2869_011_05_0114afternoon_0836_0_ex.jpg": (2869, 5),
    "2944_020_01_0114afternoon_1429_2_ex.jpg": (2944, 1),
    "3032_043_07_0114afternoon_1088_3.jpg": (3032, 7),
}
MSMT_LINES = {"train": 30_248, "val": 2_373, "query": 11_659, "gallery": 82_161}


def touch(path: Path) -> Path:
    """A dummy image file: readers go by names and never decode pixels."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\xff\xd8\xff\xd9")
    return path


def pid_cams(samples: list) -> list[tuple[int, int]]:
    return [(s.pid, s.camid) for s in samples]


def names(samples: list) -> list[str]:
    return [Path(s.frames[0]).name for s in samples]


def error_of(name: str, root: Path) -> str:
    with pytest.raises(DatasetError) as info:
        read_dataset(name, root)
    return str(info.value)


# ---------------------------------------------------------------- genuine samples


@pytest.fixture(scope="module")
def mars_real() -> ReidDataset:
    return read_mars(REAL / "mars")


@pytest.fixture(scope="module")
def mars_tables() -> dict[str, np.ndarray]:
    info = REAL / "mars" / "info"
    return {
        "train": scipy.io.loadmat(info / "tracks_train_info.mat")["track_train_info"],
        "test": scipy.io.loadmat(info / "tracks_test_info.mat")["track_test_info"],
        "query": scipy.io.loadmat(info / "query_IDX.mat")["query_IDX"].ravel().astype(int) - 1,
    }


@needs_real
@pytest.mark.parametrize("root", [REAL, REAL / "market1501"])
def test_market_real_counts_ids_and_cameras(root: Path) -> None:
    dataset = read_dataset("market1501", root)
    assert dataset.root == (REAL / "market1501").resolve()
    assert not dataset.video
    assert pid_cams(dataset.train) == MARKET_TRAIN
    assert pid_cams(dataset.query) == MARKET_QUERY
    assert pid_cams(dataset.gallery) == MARKET_GALLERY
    assert dataset.missing == {split: [] for split in SPLITS}
    assert all(Path(s.frames[0]).is_file() and s.track == 0 for s in dataset.gallery)


@needs_real
def test_msmt17_real_test_images_and_missing() -> None:
    dataset = read_dataset("msmt17", REAL)
    assert dataset.root == (REAL / "msmt17").resolve()
    assert dataset.train == []
    assert dict(zip(names(dataset.query), pid_cams(dataset.query), strict=True)) == MSMT_QUERY
    assert dict(zip(names(dataset.gallery), pid_cams(dataset.gallery), strict=True)) == (
        MSMT_GALLERY
    )
    assert len(dataset.missing["train"]) == MSMT_LINES["train"]
    assert len(dataset.missing["query"]) == MSMT_LINES["query"] - len(MSMT_QUERY)
    assert len(dataset.missing["gallery"]) == MSMT_LINES["gallery"] - len(MSMT_GALLERY)
    absent = REAL / "msmt17" / "train" / "0000" / "0000_045_12_0303morning_0006_2.jpg"
    assert dataset.missing["train"][0] == str(absent)


@needs_real
def test_msmt17_real_include_val_adds_val_list() -> None:
    dataset = read_msmt17(REAL / "msmt17", include_val=True)
    assert len(dataset.missing["train"]) == MSMT_LINES["train"] + MSMT_LINES["val"]


@needs_real
def test_msmt17_real_lists_cover_all_15_cameras() -> None:
    for key, file_name in LIST_FILES.items():
        entries = read_list(REAL / "msmt17" / file_name)
        assert len(entries) == MSMT_LINES[key]
        assert {e.camid for e in entries} == set(range(1, 16)), key


@needs_real
def test_mars_real_train_pid13_tracklets(mars_real: ReidDataset, mars_tables: dict) -> None:
    rows = mars_tables["train"][[477, 478]].tolist()
    assert rows == [[32885, 32908, 13, 5], [32909, 32938, 13, 6]]
    folder = REAL / "mars" / "bbox_train" / "0013"
    on_disk = {f"C{c}T{t:04d}": len(list(folder.glob(f"0013C{c}T{t:04d}F*.jpg")))
               for c, t in [(5, 1), (6, 2)]}
    assert on_disk == {"C5T0001": 24, "C6T0002": 30}  # rows' lengths: the frames are complete
    pid13 = [s for s in mars_real.train if s.pid == 13]
    assert [(s.camid, s.track, len(s.frames)) for s in pid13] == [(5, 1, 24), (6, 2, 30)]
    assert [Path(f).name for f in pid13[0].frames[:2]] == ["0013C5T0001F001.jpg",
                                                           "0013C5T0001F002.jpg"]
    assert not [p for p in mars_real.missing["train"] if "/0013/" in p]


@needs_real
def test_mars_real_test_pid8_query_and_gallery(mars_real: ReidDataset, mars_tables: dict) -> None:
    assert [r for r in range(4161, 4166) if r in set(mars_tables["query"])] == [4163, 4164, 4165]
    query8 = [(s.camid, s.track, len(s.frames)) for s in mars_real.query if s.pid == 8]
    gallery8 = [(s.camid, s.track, len(s.frames)) for s in mars_real.gallery if s.pid == 8]
    assert query8 == [(1, 3, 93), (6, 5, 23)]  # T0004 (row 4164) has no frames on disk
    assert gallery8 == [(1, 1, 27), (1, 2, 25)]
    absent_t4 = [Path(p).name for p in mars_real.missing["query"] if "0008C3T0004" in p]
    assert absent_t4 == ["0008C3T0004F001.jpg", "0008C3T0004F002.jpg"]


@needs_real
def test_mars_real_only_present_tracklets_and_missing_counts(
    mars_real: ReidDataset, mars_tables: dict
) -> None:
    assert mars_real.video
    assert [(s.pid, s.track) for s in mars_real.train] == [(7, 1), (7, 2), (13, 1), (13, 2)]
    lengths = {part: mars_tables[part][:, 1] - mars_tables[part][:, 0] + 1
               for part in ("train", "test")}
    test_pids = mars_tables["test"][:, 2]
    is_query = np.isin(np.arange(len(test_pids)), mars_tables["query"])
    expected_total = {
        "train": lengths["train"].sum(),
        "query": lengths["test"][is_query].sum(),
        "gallery": lengths["test"][~is_query & (test_pids != -1)].sum(),
    }
    for split in SPLITS:
        present = sum(len(s.frames) for s in mars_real.split(split))
        assert present + len(mars_real.missing[split]) == expected_total[split], split
    assert all(Path(f).is_file() for s in mars_real.train for f in s.frames)


# ---------------------------------------------------------------- image folders (tmp)


def market(root: Path, files: dict[str, list[str]]) -> Path:
    for folder, file_names in files.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        for name in file_names:
            touch(root / folder / name)
    return root


def test_market_junk_and_distractors(tmp_path: Path) -> None:
    market(tmp_path, {
        "bounding_box_train": ["0001_c1s1_000001_01.jpg", "0000_c1s1_000002_01.jpg",
                               "-1_c2s1_000003_01.jpg"],
        "query": ["0003_c2s1_000001_00.jpg", "0000_c3s1_000001_00.jpg", "-1_c3s1_0001_00.jpg"],
        "bounding_box_test": ["0003_c1s1_000009_01.jpg", "0000_c4s1_000004_02.jpg",
                              "-1_c5s1_000005_03.jpg", "Thumbs.db", "notes.txt"],
    })
    dataset = read_market1501(tmp_path)
    assert pid_cams(dataset.train) == [(1, 1)]
    assert pid_cams(dataset.query) == [(3, 2)]
    assert pid_cams(dataset.gallery) == [(0, 4), (3, 1)]


def test_duke_names_and_eight_cameras(tmp_path: Path) -> None:
    market(tmp_path / "dukemtmc-reid" / "DukeMTMC-reID", {
        "bounding_box_train": ["0001_c2_f0046182.jpg", "0005_c8_f0000001.JPG", "0007_c3_f1.png"],
        "query": ["0002_c5_f0000002.jpeg"],
        "bounding_box_test": ["0002_c1_f0000003.jpg"],
    })
    dataset = read_dataset("dukemtmc", tmp_path)
    assert pid_cams(dataset.train) == [(1, 2), (5, 8), (7, 3)]
    assert pid_cams(dataset.query) == [(2, 5)]


@pytest.mark.parametrize(
    ("dataset", "layout"),
    [
        ("market1501", "."),
        ("market1501", "Market-1501-v15.09.15"),
        ("market1501", "market1501/Market-1501-v15.09.15"),
        ("market1501", "market1501"),
        ("dukemtmc", "."),
        ("dukemtmc", "DukeMTMC-reID"),
        ("dukemtmc", "dukemtmcreid/DukeMTMC-reID"),
        ("dukemtmc", "dukemtmc-reid/DukeMTMC-reID"),
    ],
)
def test_image_folder_layouts(tmp_path: Path, dataset: str, layout: str) -> None:
    folder = tmp_path / layout
    market(folder, {"bounding_box_train": ["0001_c1s1_000001_01.jpg"]})
    result = read_dataset(dataset, tmp_path)
    assert result.root == folder.resolve()
    assert pid_cams(result.train) == [(1, 1)]


def test_root_itself_wins_over_parent_layouts(tmp_path: Path) -> None:
    market(tmp_path, {"query": ["0001_c1s1_000001_00.jpg"]})
    market(tmp_path / "Market-1501-v15.09.15", {"query": ["0002_c1s1_000001_00.jpg"]})
    assert pid_cams(read_market1501(tmp_path).query) == [(1, 1)]


def test_missing_split_folder_is_reported(tmp_path: Path) -> None:
    market(tmp_path, {"bounding_box_train": ["0001_c1s1_000001_01.jpg"],
                      "bounding_box_test": ["0001_c2s1_000001_01.jpg"]})
    dataset = read_market1501(tmp_path)
    assert dataset.query == []
    assert dataset.missing == {"train": [], "query": [str(tmp_path / "query")], "gallery": []}


@pytest.mark.parametrize("dataset", DATASETS)
def test_missing_root(tmp_path: Path, dataset: str) -> None:
    root = tmp_path / "nowhere"
    message = error_of(dataset, root)
    assert str(root) in message and "does not exist" in message


@pytest.mark.parametrize(
    ("dataset", "expected"),
    [("market1501", "bounding_box_train"), ("dukemtmc", "DukeMTMC-reID"),
     ("msmt17", "list_train.txt"), ("mars", "bbox_train")],
)
def test_wrong_layout_names_root_and_expected_folders(
    tmp_path: Path, dataset: str, expected: str
) -> None:
    touch(tmp_path / "elsewhere" / "0001_c1s1_000001_01.jpg")
    message = error_of(dataset, tmp_path)
    assert str(tmp_path) in message and expected in message


def test_empty_official_folder_is_a_layout_error(tmp_path: Path) -> None:
    (tmp_path / "Market-1501-v15.09.15").mkdir()
    message = error_of("market1501", tmp_path)
    assert "Market-1501-v15.09.15" in message and "query" in message


def test_unparseable_name_names_file_and_pattern(tmp_path: Path) -> None:
    market(tmp_path, {"bounding_box_train": ["0001_c1s1_000001_01.jpg", "person1.jpg"]})
    message = error_of("market1501", tmp_path)
    assert str(tmp_path / "bounding_box_train" / "person1.jpg") in message
    assert "PPPP_cC" in message


@pytest.mark.parametrize(
    ("dataset", "file_name"),
    [("market1501", "0001_c7s1_000001_01.jpg"), ("market1501", "0001_c0s1_000001_01.jpg"),
     ("dukemtmc", "0001_c9_f0000001.jpg")],
)
def test_camera_out_of_range(tmp_path: Path, dataset: str, file_name: str) -> None:
    market(tmp_path, {"bounding_box_test": [file_name]})
    message = error_of(dataset, tmp_path)
    assert file_name in message and "camera" in message


def test_synthetic_reads_camera_count_from_marker(tmp_path: Path) -> None:
    market(tmp_path, {"bounding_box_train": ["0001_c3s1_000001_01.jpg"],
                      "query": ["0002_c1s1_000001_00.jpg"]})
    (tmp_path / "synthetic.json").write_text(json.dumps({"config": {"cameras": 3}}))
    dataset = read_dataset("synthetic", tmp_path)
    assert (dataset.name, pid_cams(dataset.train)) == ("synthetic", [(1, 3)])
    touch(tmp_path / "query" / "0002_c4s1_000001_00.jpg")
    assert "expected 1..3" in error_of("synthetic", tmp_path)


def test_synthetic_without_camera_count_accepts_any_camera(tmp_path: Path) -> None:
    market(tmp_path, {"bounding_box_train": ["0001_c12s1_000001_01.jpg"]})
    (tmp_path / "synthetic.json").write_text("{}")
    assert pid_cams(read_dataset("synthetic", tmp_path).train) == [(1, 12)]


def test_synthetic_without_marker_suggests_generator(tmp_path: Path) -> None:
    market(tmp_path, {"bounding_box_train": ["0001_c1s1_000001_01.jpg"]})
    message = error_of("synthetic", tmp_path)
    assert "synthetic.json" in message
    assert "python -m dmnreid.data_prep synthetic --out" in message


def test_unknown_dataset_lists_valid_names(tmp_path: Path) -> None:
    message = error_of("cuhk03", tmp_path)
    assert "cuhk03" in message and all(name in message for name in DATASETS)


# ---------------------------------------------------------------- MSMT17 (tmp)


def msmt(folder: Path, lists: dict[str, list[str]], images: dict[str, list[str]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for key, lines in lists.items():
        (folder / LIST_FILES[key]).write_text("".join(line + "\n" for line in lines))
    for image_dir, relpaths in images.items():
        for relpath in relpaths:
            touch(folder / image_dir / relpath)
    return folder


TRAIN_LINE = "0000/0000_045_12_0303morning_0006_2.jpg 0"
VAL_LINE = "0001/0001_013_04_0303morning_0020_2_ex.jpg 1"
QUERY_LINE = "0000/0000_000_01_0303morning_0015_0.jpg 0"
GALLERY_LINE = "0003/0003_019_15_0303morning_0029_1.jpg 3"
ALL_LISTS = {"train": [TRAIN_LINE], "val": [VAL_LINE], "query": [QUERY_LINE],
             "gallery": [GALLERY_LINE, "", "0004/0004_001_02_0303noon_0001_0.jpg 4"]}


@pytest.mark.parametrize(
    ("layout", "train_dir", "test_dir"),
    [(".", "train", "test"), ("MSMT17_V1", "train", "test"),
     ("msmt17/MSMT17_V1", "train", "test"), ("MSMT17_V2", "mask_train_v2", "mask_test_v2"),
     ("msmt17/MSMT17_V2", "mask_train_v2", "mask_test_v2")],
)
def test_msmt17_layouts_and_versions(
    tmp_path: Path, layout: str, train_dir: str, test_dir: str
) -> None:
    folder = msmt(tmp_path / layout, ALL_LISTS, {
        train_dir: ["0000/0000_045_12_0303morning_0006_2.jpg"],
        test_dir: ["0000/0000_000_01_0303morning_0015_0.jpg",
                   "0003/0003_019_15_0303morning_0029_1.jpg", "0003/Thumbs.db"],
    })
    dataset = read_dataset("msmt17", tmp_path)
    assert dataset.root == folder.resolve()
    assert pid_cams(dataset.train) == [(0, 12)]  # pid 0 is a real MSMT17 identity
    assert pid_cams(dataset.query) == [(0, 1)]
    assert pid_cams(dataset.gallery) == [(3, 15)]
    expected_absent = folder.resolve() / test_dir / "0004" / "0004_001_02_0303noon_0001_0.jpg"
    assert dataset.missing == {"train": [], "query": [], "gallery": [str(expected_absent)]}


def test_msmt17_include_val(tmp_path: Path) -> None:
    msmt(tmp_path, ALL_LISTS, {"train": ["0000/0000_045_12_0303morning_0006_2.jpg",
                                         "0001/0001_013_04_0303morning_0020_2_ex.jpg"]})
    assert pid_cams(read_msmt17(tmp_path).train) == [(0, 12)]
    assert pid_cams(read_msmt17(tmp_path, include_val=True).train) == [(0, 12), (1, 4)]


def test_msmt17_without_list_files(tmp_path: Path) -> None:
    touch(tmp_path / "MSMT17_V1" / "test" / "0000" / "0000_000_01_0303morning_0015_0.jpg")
    message = error_of("msmt17", tmp_path)
    assert str(tmp_path / "MSMT17_V1" / "list_train.txt") in message and "missing" in message


@pytest.mark.parametrize(
    "bad_line",
    ["0000/0000_045_12_0303morning_0006_2.jpg", "0000/0000_045_12_0303morning_0006_2.jpg x",
     "0000/0000_045.jpg 0", "0000/0000_045_12_0303morning_0006_2.txt 0",
     "0000/0000_045_16_0303morning_0006_2.jpg 0"],
)
def test_msmt17_malformed_line_names_file_and_line(tmp_path: Path, bad_line: str) -> None:
    msmt(tmp_path, {**ALL_LISTS, "query": [QUERY_LINE, bad_line]}, {})
    message = error_of("msmt17", tmp_path)
    assert f"{tmp_path / 'list_query.txt'}:2" in message


# ---------------------------------------------------------------- MARS (tmp)

# Tiny MARS: train pid 1 (two tracklets), test pid 2 (query + gallery), distractor 0, junk -1.
TRAIN_NAMES = ["0001C1T0001F001.jpg", "0001C1T0001F002.jpg", "0001C2T0002F001.jpg"]
TEST_NAMES = ["0002C1T0001F001.jpg", "0002C1T0001F002.jpg", "0002C3T0002F001.jpg",
              "0000C4T0001F001.jpg", "00-1C5T0001F001.jpg"]
TRAIN_TABLE = [[1, 2, 1, 1], [3, 3, 1, 2]]
TEST_TABLE = [[1, 2, 2, 1], [3, 3, 2, 3], [4, 4, 0, 4], [5, 5, -1, 5]]


def fake_mars(folder: Path, train_table: list, test_table: list, query_rows: list[int],
              name_lists: dict[str, list[str]] | None = None) -> Path:
    info = folder / "info"
    info.mkdir(parents=True)
    scipy.io.savemat(info / "tracks_train_info.mat",
                     {"track_train_info": np.array(train_table, dtype=np.int32)})
    scipy.io.savemat(info / "tracks_test_info.mat",
                     {"track_test_info": np.array(test_table, dtype=np.int32)})
    scipy.io.savemat(info / "query_IDX.mat",
                     {"query_IDX": np.array([query_rows], dtype=np.uint16)})
    for part, lines in (name_lists or {}).items():
        (info / f"{part}_name.txt").write_text("".join(n + "\n" for n in lines))
    return folder


def mars_frames(folder: Path, part: str, frame_names: list[str]) -> None:
    for name in frame_names:
        touch(folder / f"bbox_{part}" / name[:4] / name)


def summary(samples: list) -> list[tuple]:
    return [(s.pid, s.camid, s.track, [Path(f).name for f in s.frames]) for s in samples]


@pytest.mark.parametrize("with_lists", [True, False])
def test_mars_tiny_splits(tmp_path: Path, with_lists: bool) -> None:
    lists = {"train": TRAIN_NAMES, "test": TEST_NAMES} if with_lists else None
    folder = fake_mars(tmp_path / "mars", TRAIN_TABLE, TEST_TABLE, [2], lists)
    mars_frames(folder, "train", TRAIN_NAMES[1:])
    mars_frames(folder, "test", TEST_NAMES)
    dataset = read_dataset("mars", tmp_path)
    assert dataset.root == folder.resolve() and dataset.video
    assert summary(dataset.train) == [(1, 1, 1, ["0001C1T0001F002.jpg"]),
                                      (1, 2, 2, ["0001C2T0002F001.jpg"])]
    assert summary(dataset.query) == [(2, 3, 2, ["0002C3T0002F001.jpg"])]
    assert summary(dataset.gallery) == [(2, 1, 1, TEST_NAMES[:2]),
                                        (0, 4, 1, ["0000C4T0001F001.jpg"])]
    absent = folder.resolve() / "bbox_train" / "0001" / "0001C1T0001F001.jpg"
    assert dataset.missing == {"train": [str(absent)], "query": [], "gallery": []}


def test_mars_name_lists_give_the_official_mapping(tmp_path: Path) -> None:
    # The list may order tracklets unlike the table rows; the list wins.
    names = ["0001C2T0002F001.jpg", "0001C1T0001F001.jpg", "0001C1T0001F002.jpg"]
    folder = fake_mars(tmp_path, [[1, 1, 1, 2], [2, 3, 1, 1]], TEST_TABLE, [2],
                       {"train": names, "test": TEST_NAMES})
    mars_frames(folder, "train", names)
    dataset = read_mars(folder)
    assert [(s.camid, s.track, len(s.frames)) for s in dataset.train] == [(2, 2, 1), (1, 1, 2)]


def test_mars_name_list_disagreeing_with_table(tmp_path: Path) -> None:
    folder = fake_mars(tmp_path, [[1, 2, 1, 2], [3, 3, 1, 2]], TEST_TABLE, [2],
                       {"train": TRAIN_NAMES, "test": TEST_NAMES})
    message = error_of("mars", folder)
    assert "train_name.txt" in message and "row 0" in message


def test_mars_rebuilt_mapping_camera_mismatch(tmp_path: Path) -> None:
    folder = fake_mars(tmp_path, [[1, 2, 1, 1], [3, 3, 1, 3]], TEST_TABLE, [2])
    mars_frames(folder, "train", TRAIN_NAMES)
    message = error_of("mars", folder)
    assert "row 1" in message and "pid 1" in message and "0001C2T0002F001.jpg" in message


def test_mars_rebuilt_mapping_too_many_frames(tmp_path: Path) -> None:
    folder = fake_mars(tmp_path, [[1, 1, 1, 1], [2, 2, 1, 2]], TEST_TABLE, [2])
    mars_frames(folder, "train", TRAIN_NAMES)
    message = error_of("mars", folder)
    assert "row 0" in message and "pid 1" in message and "1 frames" in message


def test_mars_rebuilt_mapping_tracklet_without_row(tmp_path: Path) -> None:
    folder = fake_mars(tmp_path, [[1, 2, 1, 1]], TEST_TABLE, [2])
    mars_frames(folder, "train", TRAIN_NAMES)
    message = error_of("mars", folder)
    assert "pid 1" in message and "T0002" in message


def test_mars_unparseable_frame_name(tmp_path: Path) -> None:
    folder = fake_mars(tmp_path, TRAIN_TABLE, TEST_TABLE, [2])
    touch(folder / "bbox_train" / "0001" / "frame1.jpg")
    touch(folder / "bbox_train" / "0001" / "Thumbs.db")
    message = error_of("mars", folder)
    assert "frame1.jpg" in message and "PPPPCcTttttFfff" in message


def test_mars_without_mat_files(tmp_path: Path) -> None:
    mars_frames(tmp_path / "mars", "train", TRAIN_NAMES)
    message = error_of("mars", tmp_path)
    assert str(tmp_path / "mars" / "info" / "tracks_train_info.mat") in message


def test_mars_query_rows_out_of_range(tmp_path: Path) -> None:
    fake_mars(tmp_path, TRAIN_TABLE, TEST_TABLE, [9])
    assert re.search(r"query_IDX\.mat: query rows must lie in 1\.\.4", error_of("mars", tmp_path))


def test_mars_camera_out_of_range_in_table(tmp_path: Path) -> None:
    fake_mars(tmp_path, [[1, 2, 1, 7]], TEST_TABLE, [2])
    message = error_of("mars", tmp_path)
    assert "tracks_train_info.mat row 0" in message and "camera 7" in message
