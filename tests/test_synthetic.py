"""The synthetic dataset: determinism, Market-1501 layout, a real camera gap, caching, atomicity."""

from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dmnreid.data_prep import synthetic
from dmnreid.data_prep.records import DatasetError
from dmnreid.data_prep.synthetic import SyntheticConfig, generate, is_generated

NAME = re.compile(r"^(-?\d+)_c(\d+)s\d+_\d{6}_\d{2}\.jpg$")
FOLDERS = ("bounding_box_train", "bounding_box_test", "query")
SMALL = SyntheticConfig(cameras=4, train_ids=10, test_ids=10, frames_per_tracklet=(3, 5),
                        distractors=5, junk=2, seed=7)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def _parse(folder: Path) -> list[tuple[int, int, str]]:
    out = []
    for p in sorted(folder.iterdir()):
        m = NAME.match(p.name)
        assert m, f"bad file name {p.name}"
        out.append((int(m[1]), int(m[2]), p.name))
    return out


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth") / "small"
    generate(root, SMALL, progress=False)
    return root


def test_same_seed_same_bytes_other_seed_differs(small: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    generate(again, SMALL, progress=False)
    a, b = _files(small), _files(again)
    assert list(a) == list(b)
    assert a == b
    other = tmp_path / "other"
    generate(other, replace(SMALL, seed=8), progress=False)
    c = _files(other)
    assert list(c) != list(a) or any(c[k] != a[k] for k in a)


def test_market_layout_and_naming(small: Path) -> None:
    cfg = SMALL
    train, query, gallery = (_parse(small / f) for f in
                             ("bounding_box_train", "query", "bounding_box_test"))
    names = [n for split in (train, query, gallery) for _, _, n in split]
    assert len(names) == len(set(names)), "file names must be unique across the dataset"
    for split in (train, query, gallery):
        assert all(1 <= cam <= cfg.cameras for _, cam, _ in split)

    train_pids = {p for p, _, _ in train}
    test_pids = {p for p, _, _ in query}
    assert train_pids == set(range(1, cfg.train_ids + 1))
    assert test_pids == set(range(cfg.train_ids + 1, cfg.train_ids + cfg.test_ids + 1))
    assert not train_pids & test_pids
    assert {p for p, _, _ in gallery} == test_pids | {0, -1}
    assert sum(p == 0 for p, _, _ in gallery) == cfg.distractors
    assert sum(p == -1 for p, _, _ in gallery) == cfg.junk

    cams: dict[int, set[int]] = defaultdict(set)
    for p, c, _ in train + query + gallery:
        if p > 0:
            cams[p].add(c)
    assert all(len(c) >= cfg.min_cameras_per_id for c in cams.values())

    queries: dict[tuple[int, int], int] = defaultdict(int)
    for p, c, _ in query:
        queries[(p, c)] += 1
    assert set(queries.values()) == {1}, "exactly one query per (test pid, camera)"
    gallery_keys = {(p, c) for p, c, _ in gallery if p > 0}
    assert gallery_keys == set(queries), "the rest of each query's tracklet is in the gallery"

    for folder in FOLDERS:
        for p in list((small / folder).iterdir())[:20]:
            with Image.open(p) as im:
                assert im.size == (cfg.image_width, cfg.image_height)
                assert im.format == "JPEG" and im.mode == "RGB"

    meta = json.loads((small / "synthetic.json").read_text())
    assert meta["config"] == cfg.to_dict()
    assert meta["counts"]["train_images"] == len(train)
    assert meta["counts"]["query_images"] == len(query)
    assert meta["counts"]["gallery_images"] == len(gallery)
    with Image.open(small / "contact_sheet.png") as sheet:
        assert sheet.format == "PNG" and sheet.width > cfg.cameras * cfg.image_width


def _histograms(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-channel 16-bin colour histograms of the upper and lower image halves."""
    feats, pids, cams = [], [], []
    for pid, cam, name in _parse(folder):
        a = np.asarray(Image.open(folder / name).convert("RGB"))
        h = [np.histogram(part[..., c], bins=16, range=(0, 256))[0] / part[..., c].size
             for part in np.array_split(a, 2, axis=0) for c in range(3)]
        feats.append(np.concatenate(h))
        pids.append(pid)
        cams.append(cam)
    return np.array(feats), np.array(pids), np.array(cams)


def _rank1(root: Path) -> dict[str, float]:
    qf, qp, qc = _histograms(root / "query")
    gf, gp, gc = _histograms(root / "bounding_box_test")
    dist = ((qf[:, None] - gf[None]) ** 2).sum(-1)
    out = {}
    for name, allowed in (("within", gc[None] == qc[:, None]), ("cross", gc[None] != qc[:, None])):
        d = np.where(allowed & (gp[None] >= 0), dist, np.inf)
        out[name] = float((gp[d.argmin(1)] == qp).mean())
    return out


def test_camera_gap_is_real_and_identity_is_learnable(tmp_path: Path) -> None:
    base = dict(cameras=5, train_ids=0, test_ids=40, frames_per_tracklet=(3, 5), distractors=0,
                junk=0, seed=3)
    styled, plain = tmp_path / "styled", tmp_path / "plain"
    generate(styled, SyntheticConfig(**base), progress=False)
    generate(plain, SyntheticConfig(**base, style_strength=0.0), progress=False)
    r_styled, r_plain = _rank1(styled), _rank1(plain)
    chance = 1 / 40
    print(f"\nhistogram rank-1 with camera styles: within {r_styled['within']:.3f}, "
          f"cross {r_styled['cross']:.3f}; without styles: within {r_plain['within']:.3f}, "
          f"cross {r_plain['cross']:.3f}; chance about {chance:.3f}")
    # Retrieval within a camera is far easier than across cameras ...
    assert r_styled["within"] >= 0.6
    assert r_styled["within"] - r_styled["cross"] >= 0.4
    # ... and that is the cameras' doing: with styles off, cross-camera retrieval works.
    assert r_plain["cross"] - r_styled["cross"] >= 0.3
    # Identity is in the pixels: far above chance within a camera, and across cameras once
    # the camera styles are removed.
    assert r_styled["within"] >= 20 * chance
    assert r_plain["cross"] >= 10 * chance


def test_random_styles_break_the_camera_signature(tmp_path: Path) -> None:
    """Source-domain mode: a camera no longer has one look; identities differ from the net's."""
    base = dict(cameras=3, train_ids=20, test_ids=0, frames_per_tracklet=(2, 3), distractors=0,
                junk=0)

    def camera_share(root: Path) -> float:
        rows = _parse(root / "bounding_box_train")
        mean = np.array([np.asarray(Image.open(root / "bounding_box_train" / n), float)
                         .reshape(-1, 3).mean(0) for _, _, n in rows])
        cams = np.array([c for _, c, _ in rows])
        total = ((mean - mean.mean(0)) ** 2).sum()
        between = sum((cams == c).sum() * ((mean[cams == c].mean(0) - mean.mean(0)) ** 2).sum()
                      for c in set(cams))
        return float(between / total)

    fixed, rand = tmp_path / "fixed", tmp_path / "random"
    generate(fixed, SyntheticConfig(**base), progress=False)
    generate(rand, SyntheticConfig(**base, random_styles=True, appearance_seed=1000),
             progress=False)
    share_fixed, share_rand = camera_share(fixed), camera_share(rand)
    print(f"\nshare of colour variance explained by camera: fixed {share_fixed:.2f}, "
          f"random {share_rand:.2f}")
    assert share_fixed > 0.5
    assert share_rand < 0.25
    assert is_generated(rand, SyntheticConfig(**base, random_styles=True, appearance_seed=1000))


def test_appearance_depends_only_on_appearance_seed() -> None:
    a = synthetic._Looks(SyntheticConfig(seed=1, appearance_seed=5))(3)
    b = synthetic._Looks(SyntheticConfig(seed=2, appearance_seed=5, distractors=0))(3)
    c = synthetic._Looks(SyntheticConfig(seed=1, appearance_seed=6))(3)
    assert a == b
    assert a != c


def test_caching_and_mismatch(small: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert is_generated(small, SMALL)
    assert not is_generated(small, replace(SMALL, junk=3))
    assert not is_generated(tmp_path / "nothing", SMALL)

    def boom(*_: object) -> None:
        raise AssertionError("a cached dataset must not be rewritten")

    monkeypatch.setattr(synthetic, "_write_jpeg", boom)
    meta = generate(small, SMALL, progress=False)
    assert meta == json.loads((small / "synthetic.json").read_text())

    with pytest.raises(DatasetError, match=re.escape(str(small))):
        generate(small, SyntheticConfig(cameras=3, train_ids=4, test_ids=4), progress=False)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "readme.txt").write_text("not a dataset")
    with pytest.raises(DatasetError, match="foreign"):
        generate(foreign, SMALL, progress=False)


def test_incomplete_dataset_is_not_generated(small: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(small, copy)
    assert is_generated(copy, SMALL)
    next((copy / "query").iterdir()).unlink()
    assert not is_generated(copy, SMALL)
    with pytest.raises(DatasetError):
        generate(copy, SMALL, progress=False)


def test_empty_folder_is_filled(tmp_path: Path) -> None:
    cfg = SyntheticConfig(cameras=2, train_ids=2, test_ids=2, frames_per_tracklet=(2, 2),
                          distractors=1, junk=0)
    out = tmp_path / "empty"
    out.mkdir()
    generate(out, cfg, progress=False)
    assert is_generated(out, cfg)


def test_interrupted_generation_leaves_nothing(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"n": 0}
    real = synthetic._write_jpeg

    def flaky(img: Image.Image, path: Path, quality: int) -> None:
        calls["n"] += 1
        if calls["n"] == 15:
            raise OSError("disk full")
        real(img, path, quality)

    monkeypatch.setattr(synthetic, "_write_jpeg", flaky)
    out = tmp_path / "data" / "synth"
    with pytest.raises(OSError, match="disk full"):
        generate(out, SMALL, progress=False)
    assert not out.exists()
    assert list(out.parent.iterdir()) == [], "no partial sibling folder may remain"
    monkeypatch.setattr(synthetic, "_write_jpeg", real)
    generate(out, SMALL, progress=False)
    assert is_generated(out, SMALL)


@pytest.mark.parametrize("bad", [
    dict(cameras=1),
    dict(min_cameras_per_id=7),
    dict(min_cameras_per_id=1),
    dict(max_cameras_per_id=8),
    dict(frames_per_tracklet=(1, 4)),
    dict(frames_per_tracklet=(5, 4)),
    dict(train_ids=0, test_ids=0),
    dict(train_ids=9000, test_ids=1000),
    dict(image_width=8),
    dict(distractors=-1),
    dict(similar_fraction=1.5),
])
def test_bad_config_is_rejected(bad: dict, tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        generate(tmp_path / "x", SyntheticConfig(**bad), progress=False)
    assert not (tmp_path / "x").exists()


def test_config_round_trip() -> None:
    cfg = SyntheticConfig(cameras=5, frames_per_tracklet=(2, 9), random_styles=True,
                          appearance_seed=11)
    assert SyntheticConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match="unknown"):
        SyntheticConfig.from_dict({"camera": 3})
