"""The synthetic dataset: determinism, Market-1501 layout, a real camera gap, caching, atomicity."""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import Counter, defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dmnreid.config import ConfigError, RunConfig
from dmnreid.data_prep import synthetic
from dmnreid.data_prep.records import DatasetError
from dmnreid.data_prep.synthetic import (
    SyntheticConfig,
    generate,
    is_generated,
    mean_cameras_per_id,
    train_ids_for,
)
from dmnreid.prepare import synthetic_config, synthetic_folder

NAME = re.compile(r"^(-?\d+)_c(\d+)s\d+_\d{6}_\d{2}\.jpg$")
FOLDERS = ("bounding_box_train", "bounding_box_test", "query")
SMALL = SyntheticConfig(cameras=4, train_ids=10, test_ids=10, frames_per_tracklet=(3, 5),
                        distractors=5, junk=2, seed=7)
# The MSMT17-shaped network of README's recipe, at 15 cameras
MSMT17_SHAPED = {"synthetic-cameras": 15, "synthetic-cameras-per-id": "poisson",
                 "synthetic-min-cameras-per-id": 1, "synthetic-ids-per-camera": 67}

# The default network (the run's, SyntheticConfig()) as the generator wrote it before the
# cameras-per-identity settings existed (commit 15cc90d; numpy 2.4.6, Pillow 13.0.0): sha256
# over its files in sorted path order, each as its path relative to the folder, a NUL byte
# and its bytes (_fingerprint). LAYOUT hashes synthetic.json and tracklets.csv only (who is
# seen where, frames, splits: independent of the image codecs); FILES hashes every file, the
# JPEGs and contact_sheet.png included (another Pillow or libjpeg may encode other bytes).
DEFAULT_LAYOUT_SHA256 = "947d04e719b08fd34a96c1a0d951caedf94540598129875d904583ceb19b8da3"
DEFAULT_FILES_SHA256 = "d14e87560a6d47a0d4efd7d948e379eb25853bafe9a66647031002c0d479e97d"
DEFAULT_FOLDER = "c6-tr100-te100-st1-s0-v1"  # its cache folder, which its partitions hash


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def _fingerprint(root: Path, paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def _cameras_of(jobs: list, kind: str) -> list[int]:
    """How many cameras see each identity of ``kind`` in a layout."""
    return list(Counter(j.pid for j in jobs if j.kind == kind).values())


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
    dict(min_cameras_per_id=0),
    dict(max_cameras_per_id=8),
    dict(min_cameras_per_id=1, max_cameras_per_id=1),  # test identities need two cameras
    dict(cameras_per_id="normal"),
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
    # a field added later is stored only when it is not its default: earlier networks'
    # synthetic.json (and so their cache) stay what they were
    assert "cameras_per_id" not in cfg.to_dict()
    poisson = replace(cfg, cameras_per_id="poisson", min_cameras_per_id=1)
    assert poisson.to_dict()["cameras_per_id"] == "poisson"
    assert SyntheticConfig.from_dict(json.loads(json.dumps(poisson.to_dict()))) == poisson
    with pytest.raises(ValueError, match="unknown"):
        SyntheticConfig.from_dict({"camera": 3})


def test_the_default_network_is_byte_identical_to_the_one_published(tmp_path: Path) -> None:
    syn = synthetic_config(RunConfig())
    assert syn == SyntheticConfig() and synthetic_folder(syn) == DEFAULT_FOLDER
    root = tmp_path / "default"
    generate(root, syn, progress=False)
    files = [p for p in root.rglob("*") if p.is_file()]
    layout = [root / "synthetic.json", root / "tracklets.csv"]
    assert _fingerprint(root, layout) == DEFAULT_LAYOUT_SHA256, "identities, cameras or splits"
    assert _fingerprint(root, files) == DEFAULT_FILES_SHA256, "images (or the image codecs)"


def test_mean_cameras_per_id_is_what_the_draws_average() -> None:
    for cfg in (SyntheticConfig(), SyntheticConfig(cameras=4, cameras_per_id="poisson"),
                SyntheticConfig(cameras=15, min_cameras_per_id=1, cameras_per_id="poisson"),
                SyntheticConfig(cameras=15, min_cameras_per_id=1, max_cameras_per_id=3)):
        for kind in ("train", "test"):
            rng = np.random.default_rng(0)
            low = synthetic._lowest_cameras(cfg, kind)
            draws = [synthetic._cameras_seen(rng, cfg, low) for _ in range(20_000)]
            assert min(draws) >= (2 if kind == "test" else cfg.min_cameras_per_id)
            assert max(draws) <= cfg.cameras_per_id_max
            assert np.mean(draws) == pytest.approx(mean_cameras_per_id(cfg, kind), abs=0.03)
    assert mean_cameras_per_id(SyntheticConfig()) == 4.0  # 2..6 cameras, uniform


def test_poisson_cameras_per_identity_look_like_msmt17() -> None:
    """1 + Poisson(2) cameras: e^-2 = 13.5% of the training identities in one camera, most in
    2 to 4 of 15; test identities in at least 2 (a query camera and a gallery camera)."""
    cfg = SyntheticConfig(cameras=15, train_ids=3000, test_ids=1000, min_cameras_per_id=1,
                          cameras_per_id="poisson", distractors=0, junk=0)
    jobs = synthetic._layout(cfg)
    train, test = _cameras_of(jobs, "train"), _cameras_of(jobs, "test")
    assert train.count(1) / len(train) == pytest.approx(math.exp(-2), abs=0.02)
    assert np.mean(train) == pytest.approx(3.0, abs=0.1)
    assert sum(2 <= k <= 4 for k in train) / len(train) > 0.6
    assert min(test) == 2 and np.mean(test) == pytest.approx(mean_cameras_per_id(cfg, "test"),
                                                             abs=0.1)


@pytest.mark.parametrize("cameras", [15, 30, 60])
def test_ids_per_camera_keep_a_cameras_tracklets_as_cameras_are_added(cameras: int) -> None:
    syn = synthetic_config(RunConfig.from_mapping({**MSMT17_SHAPED,
                                                   "synthetic-cameras": cameras}))
    assert syn.train_ids == train_ids_for(67, syn) == round(67 * cameras / 3)
    per_camera = Counter(j.cam for j in synthetic._layout(syn) if j.kind == "train")
    assert len(per_camera) == cameras
    assert np.mean(list(per_camera.values())) == pytest.approx(67, rel=0.05)


def test_a_small_msmt17_shaped_network_keeps_the_test_protocol(tmp_path: Path) -> None:
    cfg = replace(SMALL, train_ids=30, min_cameras_per_id=1, cameras_per_id="poisson")
    root = tmp_path / "poisson"
    generate(root, cfg, progress=False)
    assert is_generated(root, cfg) and not is_generated(root, replace(cfg, min_cameras_per_id=2))
    cams: dict[tuple[str, int], set[int]] = defaultdict(set)
    for split, folder in (("train", "bounding_box_train"), ("test", "query"),
                          ("test", "bounding_box_test")):
        for pid, cam, _ in _parse(root / folder):
            if pid > 0:
                cams[(split, pid)].add(cam)
    seen = Counter(len(c) for (split, _), c in cams.items() if split == "train")
    assert seen[1] > 0, "training identities seen by one camera only"
    assert all(len(c) >= 2 for (split, _), c in cams.items() if split == "test")


def test_the_cache_folder_names_the_layout_settings() -> None:
    msmt = synthetic_config(RunConfig.from_mapping(MSMT17_SHAPED))
    assert (msmt.cameras_per_id, msmt.min_cameras_per_id, msmt.max_cameras_per_id) == \
        ("poisson", 1, None)
    assert synthetic_folder(msmt) == "c15-tr335-te100-st1-s0-v1-poisson-k1-all"
    # a maximum of all the cameras is no maximum: the same network, the same folder
    every = RunConfig.from_mapping({**MSMT17_SHAPED, "synthetic-max-cameras-per-id": 15})
    assert synthetic_config(every) == msmt
    folders = {synthetic_folder(synthetic_config(RunConfig.from_mapping(values))) for values in (
        {}, {"synthetic-min-cameras-per-id": 1}, {"synthetic-max-cameras-per-id": 4},
        {"synthetic-cameras-per-id": "poisson"})}
    assert len(folders) == 4 and DEFAULT_FOLDER in folders


def test_too_many_identities_per_camera_are_refused_naming_the_key() -> None:
    cfg = RunConfig.from_mapping({"synthetic-ids-per-camera": 9000})  # 13,500 ids on 6 cameras
    with pytest.raises(ConfigError, match=r"^synthetic-ids-per-camera = 9000 takes 13500"):
        synthetic_config(cfg)
