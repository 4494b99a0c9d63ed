"""A procedurally rendered multi-camera person re-ID dataset, written in the Market-1501 layout.

It is the embedded default dataset: no download, deterministic from a seed, small enough to
generate in seconds. Identity lives in a pedestrian's appearance (clothing colours and pattern,
accessories, hair, body proportions); the camera lives in a per-camera imaging style (colour
cast, gamma, contrast, scene background, blur, noise, JPEG quality, framing, viewpoint mix), so
that retrieval across cameras is clearly harder than within one camera, as on real data.

With ``random_styles=True`` and an ``appearance_seed`` of its own, the same generator yields a
labelled "source domain" (new identities, a fresh imaging style per tracklet) for pretraining
a backbone as a stand-in for ImageNet.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from dmnreid.data_prep.records import DatasetError

GENERATOR = "dmnreid.synthetic"
GENERATOR_VERSION = 1
METADATA_FILE = "synthetic.json"
TRACKLETS_FILE = "tracklets.csv"
CONTACT_SHEET = "contact_sheet.png"
FOLDERS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}
# How many cameras see one identity: ``uniform`` over [min, max] cameras, or ``poisson``:
# 1 + Poisson(2) cameras clipped to [min, max], as MSMT17's identities (most in 1 to 4 of 15).
CAMERAS_PER_ID = ("uniform", "poisson")
POISSON_EXTRA_CAMERAS = 2.0
# A test identity needs a query camera and another camera holding its gallery match.
TEST_MIN_CAMERAS = 2
# SyntheticConfig fields added after networks were published (stored only when not default)
_LATER_FIELDS = ("cameras_per_id",)

# Random-stream tags: each purpose draws from its own stream so that, e.g., changing the
# number of distractors never changes what an identity looks like.
_S_LAYOUT, _S_FRAMES, _S_LOOK, _S_TWIN, _S_CAMERA, _S_TRACK_STYLE, _S_EXTRA, _S_SCENE = range(8)
_SCENE_POOL = 48  # random-style mode: scenes shared by tracklets (a scene costs ~5 ms)

FRONT, BACK, SIDE = 0, 1, 2
_SUPERSAMPLE = 2  # draw at 2x and box-downsample: cheap anti-aliasing
_CHANNELS = np.arange(3, dtype=np.uint16)


@dataclass(frozen=True)
class SyntheticConfig:
    """Everything that determines the generated files; two equal configs give equal bytes."""

    cameras: int = 6
    train_ids: int = 100
    test_ids: int = 100
    frames_per_tracklet: tuple[int, int] = (4, 8)  # min, max inclusive
    min_cameras_per_id: int = 2  # 1 allows training identities seen by one camera only
    max_cameras_per_id: int | None = None  # None: up to all cameras
    cameras_per_id: str = "uniform"  # the distribution: one of CAMERAS_PER_ID
    image_width: int = 64
    image_height: int = 128
    distractors: int = 36  # pid 0 gallery images: background-only or partial-person crops
    junk: int = 4  # pid -1 gallery images: badly cropped, blurred detections
    random_styles: bool = False  # True: a fresh imaging style per tracklet, not per camera
    style_strength: float = 1.0  # 0 = every camera images alike (ablates the camera gap)
    similar_fraction: float = 0.15  # share of identities built as a near-twin of another
    seed: int = 0  # layout: who is seen where, frame counts, per-frame jitter
    appearance_seed: int | None = None  # identities' looks; None = seed
    style_seed: int | None = None  # camera styles and scenes; None = seed

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (tuples become lists), as stored in ``synthetic.json``. Fields added
        after networks were published are left out at their defaults, so that those networks
        keep their ``synthetic.json`` and stay recognised in the cache."""
        d = asdict(self)
        d["frames_per_tracklet"] = list(self.frames_per_tracklet)
        for f in fields(self):
            if f.name in _LATER_FIELDS and d[f.name] == f.default:
                del d[f.name]
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SyntheticConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error so typos do not pass silently."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown SyntheticConfig keys: {unknown}")
        kw = dict(data)
        if "frames_per_tracklet" in kw:
            kw["frames_per_tracklet"] = tuple(int(v) for v in kw["frames_per_tracklet"])
        return cls(**kw)

    @property
    def cameras_per_id_max(self) -> int:
        return self.cameras if self.max_cameras_per_id is None else self.max_cameras_per_id

    @property
    def effective_appearance_seed(self) -> int:
        return self.seed if self.appearance_seed is None else self.appearance_seed

    @property
    def effective_style_seed(self) -> int:
        return self.seed if self.style_seed is None else self.style_seed

    def validate(self) -> None:
        """Raise ValueError naming the first bad field: bad values would fail far from here."""
        if self.cameras < 2 or self.cameras > 99:
            raise ValueError(f"cameras must be in 2..99, got {self.cameras}")
        if self.train_ids < 0 or self.test_ids < 0 or self.train_ids + self.test_ids < 1:
            raise ValueError(
                f"train_ids and test_ids must be >= 0 with at least one identity, "
                f"got {self.train_ids} and {self.test_ids}"
            )
        if self.train_ids + self.test_ids > 9999:
            raise ValueError("train_ids + test_ids must be <= 9999 (4-digit Market pids)")
        top = self.cameras_per_id_max
        if top > self.cameras:
            raise ValueError(f"max_cameras_per_id ({top}) must be <= cameras ({self.cameras})")
        if not 1 <= self.min_cameras_per_id <= top:
            raise ValueError(
                f"need 1 <= min_cameras_per_id ({self.min_cameras_per_id}) <= "
                f"max_cameras_per_id or cameras ({top})"
            )
        if self.test_ids and top < TEST_MIN_CAMERAS:
            raise ValueError(f"max_cameras_per_id ({top}) must be >= {TEST_MIN_CAMERAS}: a test "
                             "identity needs a query camera and another camera for its gallery")
        if self.cameras_per_id not in CAMERAS_PER_ID:
            raise ValueError(f"cameras_per_id must be one of {CAMERAS_PER_ID}, got "
                             f"{self.cameras_per_id!r}")
        fpt = self.frames_per_tracklet
        if len(fpt) != 2 or not 2 <= fpt[0] <= fpt[1] or fpt[1] > 500:
            raise ValueError(
                "frames_per_tracklet must be (min, max) with 2 <= min <= max <= 500 "
                f"(a test tracklet needs one query and >= 1 gallery frame), got {fpt}"
            )
        if not (16 <= self.image_width <= 1024 and 32 <= self.image_height <= 2048):
            raise ValueError(
                f"image size {self.image_width}x{self.image_height} out of range "
                "(width 16..1024, height 32..2048)"
            )
        if self.distractors < 0 or self.junk < 0:
            raise ValueError("distractors and junk must be >= 0")
        if not 0.0 <= self.style_strength <= 2.0:
            raise ValueError(f"style_strength must be in [0, 2], got {self.style_strength}")
        if not 0.0 <= self.similar_fraction <= 1.0:
            raise ValueError(f"similar_fraction must be in [0, 1], got {self.similar_fraction}")


def _lowest_cameras(config: SyntheticConfig, kind: str) -> int:
    """The fewest cameras an identity of ``kind`` ("train" or "test") is seen by."""
    low = config.min_cameras_per_id
    return max(low, TEST_MIN_CAMERAS) if kind == "test" else low


def _cameras_seen(rng: np.random.Generator, config: SyntheticConfig, low: int) -> int:
    """How many cameras see one identity: a draw of ``cameras_per_id`` within [low, max]."""
    high = config.cameras_per_id_max
    if config.cameras_per_id == "uniform":
        return int(rng.integers(low, high + 1))
    return int(np.clip(1 + rng.poisson(POISSON_EXTRA_CAMERAS), low, high))


def mean_cameras_per_id(config: SyntheticConfig, kind: str = "train") -> float:
    """The expected number of cameras that see one identity of ``kind``: what
    ``_cameras_seen`` draws on average (a Poisson draw beyond the maximum counts as it)."""
    low, high = _lowest_cameras(config, kind), config.cameras_per_id_max
    if config.cameras_per_id == "uniform":
        return (low + high) / 2
    rate = POISSON_EXTRA_CAMERAS
    pmf = [math.exp(-rate) * rate**j / math.factorial(j) for j in range(high)]  # 1 + j cameras
    below = sum(min(max(1 + j, low), high) * p for j, p in enumerate(pmf))
    return below + high * (1 - sum(pmf))


def train_ids_for(ids_per_camera: int, config: SyntheticConfig) -> int:
    """Training identities that give each camera ``ids_per_camera`` of them on average: every
    identity is seen by ``mean_cameras_per_id`` cameras, so that many tracklets per camera
    keep a camera's cost the same whatever the number of cameras."""
    return max(1, round(ids_per_camera * config.cameras / mean_cameras_per_id(config)))


# ----------------------------------------------------------------------------------------
# Appearance (identity)
# ----------------------------------------------------------------------------------------

_CLOTH = {
    "black": (28, 28, 32), "charcoal": (58, 58, 64), "grey": (122, 122, 128),
    "light_grey": (185, 185, 185), "white": (236, 236, 230), "navy": (32, 42, 84),
    "denim": (62, 88, 132), "blue": (40, 92, 185), "light_blue": (135, 175, 222),
    "teal": (22, 122, 122), "green": (42, 125, 62), "olive": (102, 106, 52),
    "khaki": (182, 166, 120), "beige": (216, 200, 164), "brown": (104, 66, 40),
    "red": (185, 32, 38), "maroon": (112, 26, 42), "pink": (232, 142, 172),
    "orange": (232, 122, 32), "yellow": (232, 202, 44), "purple": (102, 52, 134),
}
_SHIRT_W = {
    "black": 3, "charcoal": 2, "grey": 2, "light_grey": 1.5, "white": 3, "navy": 2,
    "denim": 1, "blue": 2, "light_blue": 1.5, "teal": 1, "green": 1.5, "olive": 1,
    "khaki": 1, "beige": 1, "brown": 1, "red": 2, "maroon": 1, "pink": 1.2, "orange": 1,
    "yellow": 1.2, "purple": 1,
}
_TROUSER_W = {
    "black": 4, "charcoal": 2, "grey": 2, "navy": 2, "denim": 4, "khaki": 2, "beige": 1.5,
    "brown": 1.5, "olive": 1, "white": 0.7, "light_blue": 0.8, "red": 0.4, "green": 0.4,
}
_SHOES = {"black": 4, "white": 3, "grey": 1.5, "brown": 1.5, "navy": 1, "red": 0.5, "beige": 0.7}
_SKIN = [(250, 218, 190), (236, 192, 158), (208, 160, 120), (172, 122, 86), (124, 84, 58),
         (88, 58, 42)]
_HAIR = [(22, 20, 20), (56, 36, 26), (102, 66, 40), (200, 170, 112), (150, 150, 150),
         (132, 62, 36)]
_HAIR_W = [4, 3, 2, 1.2, 0.6, 0.5]
_PATTERNS = ("solid", "hstripes", "vstripes", "checks", "logo", "jacket", "twotone")
_PATTERN_W = (3.5, 1.6, 1.0, 1.0, 1.6, 1.6, 0.8)


@dataclass
class _Look:
    """One identity's appearance; all colours are RGB float triples."""

    skin: tuple[float, float, float]
    hair: tuple[float, float, float]
    hair_style: str  # short, long, shaved
    shirt: tuple[float, float, float]
    shirt2: tuple[float, float, float]  # stripes/checks/logo/inner-shirt/lower-half colour
    pattern: str
    period: float  # stripe/check period as a fraction of body height
    logo_shape: str
    long_sleeves: bool
    trousers: tuple[float, float, float]
    trouser_kind: str  # long, shorts, skirt
    shoes: tuple[float, float, float]
    hat: str  # none, cap, beanie
    hat_colour: tuple[float, float, float]
    backpack: bool
    backpack_colour: tuple[float, float, float]
    bag: bool
    bag_colour: tuple[float, float, float]
    bag_side: int
    height: float  # fraction of the camera's nominal person height
    width: float  # body width factor
    leg_ratio: float  # leg length / body height
    head: float  # head size factor


def _pick(rng: np.random.Generator, weights: dict[str, float] | Sequence[float]) -> Any:
    """A key of ``weights`` (dict) or an index (sequence), drawn with those weights."""
    keys = list(weights) if isinstance(weights, dict) else list(range(len(weights)))
    w = np.asarray(list(weights.values()) if isinstance(weights, dict) else weights, float)
    return keys[int(rng.choice(len(keys), p=w / w.sum()))]


def _jitter(rng: np.random.Generator, rgb: Any, amount: float = 14.0) -> tuple[float, ...]:
    """A shade of a named colour: brightness scale plus small per-channel noise."""
    c = np.asarray(rgb, float) * rng.uniform(0.85, 1.15) + rng.normal(0, amount, 3)
    return tuple(float(v) for v in np.clip(c, 8, 250))


def _cloth(rng: np.random.Generator, weights: dict[str, float]) -> tuple[float, ...]:
    return _jitter(rng, _CLOTH[_pick(rng, weights)])


def _sample_look(rng: np.random.Generator) -> _Look:
    shirt_name = _pick(rng, _SHIRT_W)
    shirt2_name = shirt_name
    while shirt2_name == shirt_name:
        shirt2_name = _pick(rng, _SHIRT_W)
    skin_i = int(rng.integers(len(_SKIN)))
    return _Look(
        skin=_jitter(rng, _SKIN[skin_i], 6),
        hair=_jitter(rng, _HAIR[_pick(rng, _HAIR_W)], 8),
        hair_style=str(rng.choice(["short", "long", "shaved"], p=[0.58, 0.34, 0.08])),
        shirt=_jitter(rng, _CLOTH[shirt_name]),
        shirt2=_jitter(rng, _CLOTH[shirt2_name]),
        pattern=_PATTERNS[_pick(rng, _PATTERN_W)],
        period=float(rng.uniform(0.035, 0.075)),
        logo_shape=str(rng.choice(["circle", "square", "triangle", "bar"])),
        long_sleeves=bool(rng.random() < 0.5),
        trousers=_cloth(rng, _TROUSER_W),
        trouser_kind=str(rng.choice(["long", "shorts", "skirt"], p=[0.72, 0.16, 0.12])),
        shoes=_cloth(rng, _SHOES),
        hat=str(rng.choice(["none", "cap", "beanie"], p=[0.82, 0.1, 0.08])),
        hat_colour=_cloth(rng, _SHIRT_W),
        backpack=bool(rng.random() < 0.3),
        backpack_colour=_cloth(rng, {"black": 4, "grey": 1, "navy": 1.5, "red": 0.7,
                                     "blue": 0.7, "green": 0.5, "brown": 0.6, "orange": 0.4}),
        bag=bool(rng.random() < 0.25),
        bag_colour=_cloth(rng, {"black": 3, "brown": 2, "beige": 1, "white": 0.7, "red": 0.5}),
        bag_side=int(rng.choice([-1, 1])),
        height=float(rng.uniform(0.9, 1.0)),
        width=float(rng.uniform(0.82, 1.22)),
        leg_ratio=float(rng.uniform(0.44, 0.53)),
        head=float(rng.uniform(0.9, 1.1)),
    )


def _perturb_look(base: _Look, rng: np.random.Generator) -> _Look:
    """A near-twin: same look with one or two attributes changed (realistic hard negatives)."""
    d = dict(base.__dict__)
    options = ["shirt_shade", "pattern", "trousers", "accessory", "hair", "shoes", "shirt2"]
    for what in rng.choice(options, size=int(rng.integers(1, 3)), replace=False):
        if what == "shirt_shade":
            d["shirt"] = _jitter(rng, base.shirt, 22)
        elif what == "pattern":
            d["pattern"] = _PATTERNS[_pick(rng, _PATTERN_W)]
        elif what == "trousers":
            d["trousers"] = _cloth(rng, _TROUSER_W)
        elif what == "accessory":
            if rng.random() < 0.5:
                d["backpack"] = not base.backpack
            else:
                d["bag"] = not base.bag
        elif what == "hair":
            d["hair"] = _jitter(rng, _HAIR[_pick(rng, _HAIR_W)], 8)
            d["hair_style"] = str(rng.choice(["short", "long", "shaved"]))
        elif what == "shoes":
            d["shoes"] = _cloth(rng, _SHOES)
        else:
            d["shirt2"] = _cloth(rng, _SHIRT_W)
    d["width"] = float(np.clip(base.width + rng.normal(0, 0.04), 0.8, 1.25))
    return _Look(**d)


class _Looks:
    """Looks of one dataset's identities, some drawn as near-twins of an earlier identity."""

    def __init__(self, config: SyntheticConfig) -> None:
        self._seed = config.effective_appearance_seed
        self._frac = config.similar_fraction
        self._train = config.train_ids
        self._cache: dict[int, _Look] = {}

    def __call__(self, pid: int) -> _Look:
        if pid not in self._cache:
            first = 1 if pid <= self._train else self._train + 1  # twins stay within a split
            twin = np.random.default_rng([self._seed, _S_TWIN, pid])
            if pid > first and twin.random() < self._frac:
                base = int(twin.integers(first, pid))
                self._cache[pid] = _perturb_look(self(base), twin)
            else:
                self._cache[pid] = _sample_look(np.random.default_rng([self._seed, _S_LOOK, pid]))
        return self._cache[pid]


# ----------------------------------------------------------------------------------------
# Camera style and scene
# ----------------------------------------------------------------------------------------

_WALLS = [(128, 128, 128), (172, 160, 138), (150, 72, 56), (72, 112, 62), (92, 122, 152),
          (62, 62, 68), (202, 200, 194), (122, 100, 80), (180, 150, 110)]
_FLOORS = [(108, 108, 110), (160, 150, 135), (84, 122, 62), (182, 176, 170), (88, 80, 72),
           (140, 122, 100), (120, 130, 140)]


@dataclass
class _Style:
    """How one camera (or, in random mode, one tracklet) images the world."""

    matrix: tuple[float, ...]  # 3x4 colour matrix for PIL convert (gains, cast, saturation, ...)
    lut: np.ndarray  # (768,) float32 per-channel gamma curves, interleaved by channel
    blur: float  # Gaussian radius in output pixels
    shade: np.ndarray  # (H, W, 1) vignette and side lighting
    noise: np.ndarray  # (H + 16, W + 16, 3) sensor noise bank, cropped at random per frame
    quality: int  # JPEG quality
    scale: float  # nominal person height / frame height
    anchor: float  # feet position / frame height
    views: np.ndarray  # probabilities of front, back, side
    scene: np.ndarray  # (SH, SW, 3) uint8 background at supersampled resolution


def _lowfreq(rng: np.random.Generator, h: int, w: int, cell: float) -> np.ndarray:
    """Smooth noise in [0, 1], for textures and uneven lighting."""
    gh, gw = max(2, int(h / cell) + 2), max(2, int(w / cell) + 2)
    small = Image.fromarray(rng.random((gh, gw)).astype(np.float32), mode="F")
    return np.asarray(small.resize((w, h), Image.Resampling.BICUBIC), dtype=np.float32)


def _make_scene(rng: np.random.Generator, h: int, w: int, horizon: int) -> np.ndarray:
    """A camera's background: textured wall above a textured floor, plus clutter objects."""
    yy = np.arange(h, dtype=np.float32)[:, None]
    xx = np.arange(w, dtype=np.float32)[None, :]
    shades = rng.uniform(0.8, 1.2, (64, 64)).astype(np.float32)
    wall = np.asarray(_jitter(rng, _WALLS[int(rng.integers(len(_WALLS)))], 12), np.float32)
    wall2 = np.asarray(_jitter(rng, _WALLS[int(rng.integers(len(_WALLS)))], 12), np.float32)
    kind = int(rng.integers(5))
    if kind == 0:  # bricks / tiles
        bh = float(rng.uniform(8, 20))
        bw = bh * float(rng.uniform(1.5, 3.0))
        row = (yy // bh).astype(np.int64)
        xs = xx + (row % 2) * bw / 2
        col = (xs // bw).astype(np.int64)
        tex = shades[row % 64, col % 64][..., None] * wall
        mortar = ((yy % bh) < 2) | ((xs % bw) < 2)
        tex = np.where(mortar[..., None], wall2 * 0.5 + 100, tex)
    elif kind == 1:  # vertical panels, shop fronts
        edges = np.cumsum(rng.uniform(14, 70, size=w // 10 + 2))
        idx = np.searchsorted(edges, xx[0]).astype(np.int64)
        choose = rng.random(len(edges) + 1) < 0.4
        base = np.where(choose[idx][:, None], wall2, wall)
        tex = np.broadcast_to((shades[0, idx % 64][:, None] * base)[None], (h, w, 3))
        lines = (np.abs(xx - edges[np.clip(idx, 0, len(edges) - 1)][None, :]) < 1.5)
        tex = np.where(lines[..., None], tex * 0.55, tex)
    elif kind == 2:  # windows
        cw, ch = float(rng.uniform(26, 60)), float(rng.uniform(30, 70))
        m = float(rng.uniform(4, 9))
        inside = ((xx % cw) > m) & ((xx % cw) < cw - m) & ((yy % ch) > m) & ((yy % ch) < ch - m)
        glass = np.asarray(_jitter(rng, (70, 90, 115), 18), np.float32)
        refl = _lowfreq(rng, h, w, 24)[..., None]
        tex = np.where(inside[..., None], glass * (0.7 + 0.6 * refl), wall)
    elif kind == 3:  # foliage / hedge
        n1, n2 = _lowfreq(rng, h, w, 6), _lowfreq(rng, h, w, 22)
        leaf = np.asarray(_jitter(rng, (62, 104, 48), 14), np.float32)
        mix = np.clip((n1 * 0.6 + n2 * 0.8 - 0.4), 0, 1)[..., None]
        tex = leaf * (0.55 + 0.8 * mix) + wall * 0.15
    else:  # plain painted wall
        tex = wall * (0.9 + 0.2 * _lowfreq(rng, h, w, 30))[..., None]
    img = np.array(np.broadcast_to(tex, (h, w, 3)), np.float32)

    floor = np.asarray(_jitter(rng, _FLOORS[int(rng.integers(len(_FLOORS)))], 10), np.float32)
    fkind = int(rng.integers(4))
    fy = yy[horizon:] - horizon
    if fkind == 0:  # tiles
        t = float(rng.uniform(12, 30))
        ftex = shades[(fy // t).astype(np.int64) % 64, (xx // t).astype(np.int64) % 64][..., None]
        ftex = floor * ftex
        ftex = np.where((((fy % t) < 1.5) | ((xx % t) < 1.5))[..., None], floor * 0.6, ftex)
    elif fkind == 1:  # asphalt / gravel
        grain = rng.normal(0, 1, (h - horizon, w)).astype(np.float32)
        ftex = floor * (1 + 0.09 * grain[..., None]) * (
            0.9 + 0.2 * _lowfreq(rng, h - horizon, w, 16)[..., None])
    elif fkind == 2:  # crossing stripes
        p = float(rng.uniform(20, 40))
        ftex = np.where(((xx % p) < p / 2)[..., None], np.full(3, 215, np.float32), floor)
        ftex = np.broadcast_to(ftex, (h - horizon, w, 3))
    else:
        ftex = floor * (0.92 + 0.16 * _lowfreq(rng, h - horizon, w, 20))[..., None]
    img[horizon:] = ftex
    img[max(0, horizon - 2):horizon + 1] *= 0.6  # skirting line

    pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(pil)
    for _ in range(int(rng.integers(3, 9))):
        col = tuple(int(v) for v in _jitter(rng, _CLOTH[_pick(rng, _SHIRT_W)], 20))
        x = float(rng.uniform(0, w))
        what = int(rng.integers(4))
        if what == 0:  # pole
            pw = float(rng.uniform(3, 8))
            draw.rectangle([x, 0, x + pw, horizon + rng.uniform(5, 25)], fill=col)
        elif what == 1:  # bin / box standing on the floor
            bw, bh = float(rng.uniform(14, 40)), float(rng.uniform(18, 50))
            base = horizon + float(rng.uniform(4, max(6, h - horizon - 4)))
            draw.rectangle([x, base - bh, x + bw, base], fill=col)
        elif what == 2:  # sign on the wall
            sw, sh = float(rng.uniform(14, 44)), float(rng.uniform(8, 24))
            y = float(rng.uniform(0, max(1, horizon - sh)))
            draw.rectangle([x, y, x + sw, y + sh], fill=col)
        else:  # shrub
            r = float(rng.uniform(10, 26))
            draw.ellipse([x - r, horizon - r * 1.2, x + r, horizon + r * 0.3],
                         fill=tuple(int(v) for v in _jitter(rng, (60, 100, 50), 16)))
    arr = np.asarray(pil, np.float32)
    light = 0.8 + 0.4 * _lowfreq(rng, h, w, 80)[..., None]
    return np.clip(arr * light, 0, 255).astype(np.uint8)


def _scene(rng: np.random.Generator, config: SyntheticConfig) -> np.ndarray:
    """A background four frames wide, so different tracklets see different parts of it."""
    s = config.style_strength
    fw, fh = config.image_width * _SUPERSAMPLE, config.image_height * _SUPERSAMPLE
    sh, sw = fh + 32, 4 * fw
    horizon = int(16 + fh * (0.78 + s * (float(rng.uniform(0.5, 0.9)) - 0.78)))
    scene = _make_scene(rng, sh, sw, horizon)
    if s < 1:
        neutral = _neutral_scene(sh, sw, horizon)
        scene = (neutral * (1 - s) + scene * s).astype(np.uint8)
    return scene


def _neutral_scene(h: int, w: int, horizon: int) -> np.ndarray:
    rng = np.random.default_rng(12345)
    img = np.empty((h, w, 3), np.float32)
    img[:horizon] = 140.0
    img[horizon:] = 112.0
    img *= (0.95 + 0.1 * _lowfreq(rng, h, w, 30))[..., None]
    return img.astype(np.uint8)


def _sample_style(rng: np.random.Generator, config: SyntheticConfig,
                  scenes: list[np.ndarray] | None = None) -> _Style:
    """Draw an imaging style; ``style_strength`` pulls every parameter towards neutral.

    The background scene is drawn too, or picked from ``scenes`` when given.
    """
    s = config.style_strength
    w, h = config.image_width, config.image_height

    gains = np.exp(rng.normal(0, 0.16, 3) * s)
    cast = np.eye(3) + rng.normal(0, 0.05, (3, 3)) * (1 - np.eye(3)) * s
    sat = 1 + s * (float(rng.uniform(0.5, 1.35)) - 1)
    luma = np.array([0.299, 0.587, 0.114])
    satm = sat * np.eye(3) + (1 - sat) * np.tile(luma, (3, 1))
    contrast = 1 + s * (float(rng.uniform(0.68, 1.3)) - 1)
    bright = s * float(rng.uniform(-28, 22))
    a = contrast * np.diag(gains) @ cast @ satm
    offset = (1 - contrast) * 128 + bright
    matrix = tuple(float(v) for row in np.hstack([a, np.full((3, 1), offset)]) for v in row)

    gamma = np.exp((rng.normal(0, 0.24) + rng.normal(0, 0.06, 3)) * s)
    x = np.arange(256) / 255.0
    lut = (255 * x[:, None] ** (1 / gamma[None, :])).astype(np.float32).ravel()

    blur = 0.3 + s * (float(rng.uniform(0.0, 1.1)) - 0.3)
    sigma = 2 + s * (float(rng.uniform(1, 9)) - 2)
    vig = s * float(rng.uniform(0.0, 0.45))
    side = s * float(rng.uniform(-0.25, 0.25))
    yy = (np.arange(h, dtype=np.float32)[:, None] / (h - 1)) * 2 - 1
    xx = (np.arange(w, dtype=np.float32)[None, :] / (w - 1)) * 2 - 1
    shade = (1 - vig * (xx**2 + yy**2) / 2) * (1 + side * xx)
    noise = rng.normal(0, sigma, (h + 16, w + 16, 3)).astype(np.float32)
    quality = round(90 + s * (int(rng.integers(68, 96)) - 90))

    scale = 0.84 + s * (float(rng.uniform(0.72, 0.94)) - 0.84)
    anchor = 0.965 + s * (float(rng.uniform(0.93, 0.99)) - 0.965)
    views = (1 - min(s, 1)) / 3 + min(s, 1) * rng.dirichlet([1.2, 1.2, 1.2])

    scene = _scene(rng, config) if scenes is None else scenes[int(rng.integers(len(scenes)))]
    return _Style(matrix, lut, max(0.0, blur), shade[..., None].astype(np.float32), noise,
                  int(np.clip(quality, 50, 98)), scale, anchor, views / views.sum(), scene)


# ----------------------------------------------------------------------------------------
# Drawing a pedestrian
# ----------------------------------------------------------------------------------------

def _rgb(c: tuple[float, ...], f: float = 1.0) -> tuple[int, int, int]:
    return (int(min(255, c[0] * f)), int(min(255, c[1] * f)), int(min(255, c[2] * f)))


def _capsule(d: ImageDraw.ImageDraw, p0: tuple[float, float], p1: tuple[float, float],
             width: float, fill: tuple[int, int, int]) -> None:
    r = width / 2
    d.line([p0, p1], fill=fill, width=max(1, round(width)))
    for x, y in (p0, p1):
        d.ellipse([x - r, y - r, x + r, y + r], fill=fill)


def _pattern(look: _Look, view: int, hgt: int, wid: int, x0: float, y0: float, cx: float,
             height: float) -> np.ndarray:
    """The shirt's fabric over the torso's bounding box, as a (hgt, wid, 3) uint8 array."""
    c1 = np.asarray(look.shirt, np.float32)
    c2 = np.asarray(look.shirt2, np.float32)
    yy = np.arange(hgt, dtype=np.float32)[:, None] + y0
    xx = np.arange(wid, dtype=np.float32)[None, :] + x0 - cx
    p = max(2.0, look.period * height)
    kind = look.pattern
    if kind == "hstripes":
        m = ((yy - y0) // (p / 2) % 2 == 0) & (xx == xx)
    elif kind == "vstripes":
        m = ((xx + p / 4) // (p / 2) % 2 == 0) & (yy == yy)
    elif kind == "checks":
        m = ((yy - y0) // (p / 2) + (xx // (p / 2))) % 2 == 0
    elif kind == "jacket":
        inner = (np.abs(xx) < 0.035 * height * look.width) & (view == FRONT)
        m = ~inner & (yy == yy)
    elif kind == "twotone":
        m = ((yy - y0) < hgt * 0.5) & (xx == xx)
    else:
        m = np.ones((hgt, wid), bool)
    return np.where(m[..., None], c1, c2).astype(np.uint8)


def _box(b: Sequence[float]) -> list[float]:
    """Order a box's corners: mirrored drawing (facing left) swaps x0 and x1."""
    x0, y0, x1, y1 = b
    return [min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)]


def _ellipse(d: ImageDraw.ImageDraw, b: Sequence[float], fill: Any) -> None:
    d.ellipse(_box(b), fill=fill)


def _rect(d: ImageDraw.ImageDraw, b: Sequence[float], fill: Any) -> None:
    d.rectangle(_box(b), fill=fill)


def _rrect(d: ImageDraw.ImageDraw, b: Sequence[float], radius: float, fill: Any) -> None:
    d.rounded_rectangle(_box(b), radius=radius, fill=fill)


def _chord(d: ImageDraw.ImageDraw, b: Sequence[float], start: float, end: float,
           fill: Any) -> None:
    d.chord(_box(b), start, end, fill=fill)


def _draw_person(img: Image.Image, look: _Look, view: int, flip: int, phase: float, cx: float,
                 feet: float, height: float, shadow: bool = True) -> None:
    """Draw one pedestrian into ``img`` (supersampled frame), feet at ``feet``, facing ``flip``."""
    d = ImageDraw.Draw(img)
    size = height
    top = feet - size

    def px(u: float) -> float:
        return cx + flip * u * size

    def py(v: float) -> float:
        return top + v * size

    w = look.width
    r = 0.064 * look.head
    y_head = 0.012 + r
    y_sh = 2 * r + 0.05
    leg = look.leg_ratio
    y_hip = 0.975 - leg
    side = view == SIDE
    sw = 0.118 * w * (0.62 if side else 1.0)
    hw = 0.094 * w * (0.72 if side else 1.0)
    s = math.sin(phase)
    skin = _rgb(look.skin)
    trousers = _rgb(look.trousers)
    lw = 0.07 * w * size

    if shadow:
        sd = ImageDraw.Draw(img, "RGBA")
        _ellipse(sd, [px(-0.16 * w), feet - 0.018 * size, px(0.16 * w), feet + 0.018 * size],
                   fill=(0, 0, 0, 70))
        del sd

    # -- legs and feet ------------------------------------------------------------------
    if side:
        ang = 0.42 * s
        legs = [((0.0, y_hip + 0.02), (math.sin(-ang) * leg, y_hip + math.cos(ang) * leg)),
                ((0.0, y_hip + 0.02), (math.sin(ang) * leg, y_hip + math.cos(ang) * leg))]
        dims = [0.78, 1.0]
    else:
        lift_a, lift_b = 0.03 * max(0.0, s), 0.03 * max(0.0, -s)
        legs = [((-0.048 * w, y_hip + 0.02), (-0.054 * w, 0.975 - lift_a)),
                ((0.048 * w, y_hip + 0.02), (0.054 * w, 0.975 - lift_b))]
        dims = [1.0, 1.0]

    # Side view: the far arm swings behind everything else.
    arm_len = 0.34
    if side:
        aang = -0.5 * s
        shoulder = (0.01, y_sh + 0.025)
        far_hand = (shoulder[0] - math.sin(aang) * arm_len, shoulder[1] + math.cos(aang) * arm_len)
        _draw_arm(d, look, px, py, size, shoulder, far_hand, w, 0.75)
        if look.backpack:
            _rrect(d,
                [min(px(-sw - 0.085), px(-sw + 0.01)), py(y_sh + 0.01),
                 max(px(-sw - 0.085), px(-sw + 0.01)), py(y_sh + 0.25)],
                radius=0.02 * size, fill=_rgb(look.backpack_colour))

    for ((hx, hy), (fx, fy)), dim in zip(legs, dims, strict=True):
        hip, foot = (px(hx), py(hy)), (px(fx), py(fy))
        if look.trouser_kind == "long":
            _capsule(d, hip, foot, lw, _rgb(look.trousers, dim))
        else:
            _capsule(d, hip, foot, lw * 0.8, _rgb(look.skin, dim))
            if look.trouser_kind == "shorts":
                knee = (hip[0] + 0.45 * (foot[0] - hip[0]), hip[1] + 0.45 * (foot[1] - hip[1]))
                _capsule(d, hip, knee, lw * 1.05, _rgb(look.trousers, dim))
        # shoe
        toe = 0.05 if side else 0.0
        _ellipse(d, [min(px(fx - 0.04 * w), px(fx + 0.04 * w + toe)), py(fy - 0.014),
                   max(px(fx - 0.04 * w), px(fx + 0.04 * w + toe)), py(fy + 0.022)],
                  fill=_rgb(look.shoes, dim))
    # hips / waist in trouser colour so legs join the torso
    d.polygon([(px(-hw), py(y_hip - 0.02)), (px(hw), py(y_hip - 0.02)),
               (px(hw + 0.006), py(y_hip + 0.05)), (px(-hw - 0.006), py(y_hip + 0.05))],
              fill=trousers)
    if look.trouser_kind == "skirt":
        d.polygon([(px(-hw), py(y_hip - 0.02)), (px(hw), py(y_hip - 0.02)),
                   (px(hw + 0.05), py(y_hip + 0.2)), (px(-hw - 0.05), py(y_hip + 0.2))],
                  fill=trousers)

    # -- torso --------------------------------------------------------------------------
    _rect(d, [px(-0.022), py(y_head + r * 0.6), px(0.022), py(y_sh + 0.02)], fill=skin)
    lean = 0.012 if side else 0.0
    poly = [(px(-sw + lean), py(y_sh)), (px(sw + lean), py(y_sh)),
            (px(hw), py(y_hip + 0.035)), (px(-hw), py(y_hip + 0.035))]
    xs = [p[0] for p in poly]
    x0, x1 = math.floor(min(xs) - 0.04 * size), math.ceil(max(xs) + 0.04 * size)
    y0, y1 = math.floor(py(y_sh) - 0.04 * size), math.ceil(py(y_hip + 0.035)) + 1
    mask = Image.new("L", (x1 - x0, y1 - y0), 0)
    md = ImageDraw.Draw(mask)
    md.polygon([(x - x0, y - y0) for x, y in poly], fill=255)
    rr = 0.035 * size
    for sx_ in (-sw + 0.03, sw - 0.03):
        ex, ey = px(sx_ + lean) - x0, py(y_sh + 0.03) - y0
        md.ellipse([ex - rr * 1.1, ey - rr, ex + rr * 1.1, ey + rr], fill=255)
    fabric = _pattern(look, view, y1 - y0, x1 - x0, x0, y0, cx, size)
    img.paste(Image.fromarray(fabric), (x0, y0), mask)
    d = ImageDraw.Draw(img)

    if look.pattern == "logo" and view == FRONT:
        lx, ly, lr = px(0.02 * w), py(y_sh + 0.09), 0.032 * size
        c2 = _rgb(look.shirt2)
        box = [lx - lr, ly - lr, lx + lr, ly + lr]
        if look.logo_shape == "circle":
            _ellipse(d, box, fill=c2)
        elif look.logo_shape == "square":
            _rect(d, box, fill=c2)
        elif look.logo_shape == "triangle":
            d.polygon([(lx, ly - lr), (lx + lr, ly + lr), (lx - lr, ly + lr)], fill=c2)
        else:
            _rect(d, [lx - 1.6 * lr, ly - 0.45 * lr, lx + 1.6 * lr, ly + 0.45 * lr], fill=c2)

    # -- accessories on the torso -------------------------------------------------------
    if look.backpack and view == BACK:
        bx = 0.085 * w
        _rrect(d, [px(-bx), py(y_sh + 0.015), px(bx), py(y_sh + 0.25)],
                            radius=0.025 * size, fill=_rgb(look.backpack_colour))
        _rect(d, [px(-bx * 0.6), py(y_sh + 0.15), px(bx * 0.6), py(y_sh + 0.23)],
                    fill=_rgb(look.backpack_colour, 0.75))
    elif look.backpack and view == FRONT:
        for u in (-0.07 * w, 0.07 * w):
            _capsule(d, (px(u), py(y_sh)), (px(u * 1.05), py(y_sh + 0.2)), 0.018 * size,
                     _rgb(look.backpack_colour, 0.8))

    # -- arms ---------------------------------------------------------------------------
    if side:
        near_hand = (shoulder[0] + math.sin(aang) * arm_len,
                     shoulder[1] + math.cos(aang) * arm_len)
        _draw_arm(d, look, px, py, size, shoulder, near_hand, w, 1.0)
    else:
        for k in (-1, 1):
            sh_ = (k * (sw - 0.02), y_sh + 0.02)
            hand = (k * (sw + 0.015), y_sh + arm_len - 0.012 * k * s)
            _draw_arm(d, look, px, py, size, sh_, hand, w, 1.0)

    # -- head ---------------------------------------------------------------------------
    hair = look.hair if look.hair_style != "shaved" else tuple(
        0.5 * a + 0.5 * b for a, b in zip(look.hair, look.skin, strict=True))
    hc = _rgb(hair)
    hx, hy = px(0), py(y_head)
    rs = r * size
    if look.hair_style == "long" and view != FRONT:
        _rrect(d, [px(-0.9 * r) if not side else min(px(-1.0 * r), px(0.1 * r)),
                             hy, px(0.9 * r) if not side else max(px(-1.0 * r), px(0.1 * r)),
                             py(y_sh + 0.1)], radius=0.3 * rs, fill=hc)
    if view == FRONT:
        if look.hair_style == "long":
            _rrect(d, [hx - 1.02 * rs, hy - 0.2 * rs, hx + 1.02 * rs,
                                 py(y_sh + 0.06)], radius=0.4 * rs, fill=hc)
        _ellipse(d, [hx - rs, hy - 1.08 * rs, hx + rs, hy + 0.75 * rs], fill=hc)
        _ellipse(d, [hx - 0.82 * rs, hy - 0.72 * rs, hx + 0.82 * rs, hy + 0.98 * rs], fill=skin)
    elif view == BACK:
        _ellipse(d, [hx - 0.95 * rs, hy - 1.02 * rs, hx + 0.95 * rs, hy + rs], fill=hc)
    else:
        fx = px(0.22 * r)
        _ellipse(d, [fx - 0.8 * rs, hy - 0.8 * rs, fx + 0.8 * rs, hy + 0.98 * rs], fill=skin)
        bx0, bx1 = sorted((px(-1.0 * r), px(0.6 * r)))
        _chord(d, [bx0, hy - 1.05 * rs, bx1, hy + 0.6 * rs], 180, 360, fill=hc)
        bx0, bx1 = sorted((px(-1.0 * r), px(0.0)))
        _ellipse(d, [bx0, hy - 1.0 * rs, bx1, hy + 0.7 * rs], fill=hc)
    if look.hat != "none":
        hcol = _rgb(look.hat_colour)
        lift = 0.5 if look.hat == "cap" else 0.2
        _chord(d, [hx - 1.05 * rs, hy - 1.15 * rs, hx + 1.05 * rs, hy + lift * rs * 2],
                180, 360, fill=hcol)
        if look.hat == "cap":
            if side:
                bx0, bx1 = sorted((px(0.4 * r), px(1.6 * r)))
                _rect(d, [bx0, hy - 0.05 * rs, bx1, hy + 0.12 * rs], fill=hcol)
            elif view == FRONT:
                _ellipse(d, [hx - 0.9 * rs, hy - 0.1 * rs, hx + 0.9 * rs, hy + 0.25 * rs],
                          fill=_rgb(look.hat_colour, 0.8))

    # -- shoulder bag -------------------------------------------------------------------
    if look.bag:
        b = look.bag_side if not side else 1
        bag_c = _rgb(look.bag_colour)
        bx = b * (hw + 0.035) if not side else 0.02
        top_y = y_hip - 0.03
        _capsule(d, (px(-b * sw * 0.7), py(y_sh + 0.005)), (px(bx), py(top_y)),
                 0.012 * size, _rgb(look.bag_colour, 0.7))
        x0b, x1b = sorted((px(bx - 0.045), px(bx + 0.045)))
        _rrect(d, [x0b, py(top_y), x1b, py(top_y + 0.11)], radius=0.012 * size,
                            fill=bag_c)


def _draw_arm(d: ImageDraw.ImageDraw, look: _Look, px: Callable[[float], float],
              py: Callable[[float], float], size: float, shoulder: tuple[float, float],
              hand: tuple[float, float], w: float, dim: float) -> None:
    s0, h0 = (px(shoulder[0]), py(shoulder[1])), (px(hand[0]), py(hand[1]))
    aw = 0.05 * w * size
    sleeve = _rgb(look.shirt, dim)
    if look.long_sleeves or look.pattern == "jacket":
        _capsule(d, s0, h0, aw, sleeve)
    else:
        elbow = (s0[0] + 0.45 * (h0[0] - s0[0]), s0[1] + 0.45 * (h0[1] - s0[1]))
        _capsule(d, s0, h0, aw * 0.8, _rgb(look.skin, dim))
        _capsule(d, s0, elbow, aw * 1.1, sleeve)
    hr = 0.024 * size
    _ellipse(d, [h0[0] - hr, h0[1] - hr, h0[0] + hr, h0[1] + hr], fill=_rgb(look.skin, dim))


# ----------------------------------------------------------------------------------------
# Frames
# ----------------------------------------------------------------------------------------

def _finish(canvas: Image.Image, style: _Style, rng: np.random.Generator, illum: float,
            config: SyntheticConfig, extra_blur: float = 0.0) -> Image.Image:
    """Downsample the supersampled frame and image it through the camera."""
    img = canvas.reduce(_SUPERSAMPLE)
    radius = style.blur + extra_blur
    if radius > 0.2:
        img = img.filter(ImageFilter.GaussianBlur(radius))
    m = list(style.matrix)
    for row in range(3):
        for col in range(3):
            m[row * 4 + col] *= illum
    img = img.convert("RGB", tuple(m))
    h, w = config.image_height, config.image_width
    oy, ox = (int(v) for v in rng.integers(0, 17, 2))
    arr = np.take(style.lut, np.asarray(img) * np.uint16(3) + _CHANNELS)  # gamma by table
    arr = arr * style.shade + style.noise[oy:oy + h, ox:ox + w]
    return Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8))


def _background(style: _Style, config: SyntheticConfig, ox: int, oy: int) -> Image.Image:
    fw, fh = config.image_width * _SUPERSAMPLE, config.image_height * _SUPERSAMPLE
    sh, sw = style.scene.shape[:2]
    ox = int(np.clip(ox, 0, sw - fw))
    oy = int(np.clip(oy, 0, sh - fh))
    return Image.fromarray(style.scene[oy:oy + fh, ox:ox + fw])


def _render_tracklet(look: _Look, style: _Style, n: int, rng: np.random.Generator,
                     config: SyntheticConfig) -> list[Image.Image]:
    """Consecutive frames of one person walking through one camera's view."""
    fw, fh = config.image_width * _SUPERSAMPLE, config.image_height * _SUPERSAMPLE
    sw = style.scene.shape[1]
    view = int(rng.choice(3, p=style.views))
    direction = int(rng.choice([-1, 1]))
    phase = float(rng.uniform(0, 2 * math.pi))
    step = float(rng.uniform(0.55, 1.0))
    # The camera is static and the person walks, so the crop slides over the scene (side
    # view) or the person grows or shrinks (towards or away from the camera).
    if view == SIDE:
        vx, grow = direction * float(rng.uniform(0.08, 0.2)) * fw, 0.0
    else:
        vx = float(rng.normal(0, 0.03)) * fw
        grow = float(rng.uniform(0.005, 0.02)) * (1 if view == FRONT else -1)
    path = vx * (n - 1)
    lo, hi = max(0.0, -path), sw - fw - max(0.0, path)
    base_ox = float(rng.uniform(lo, hi)) if hi > lo else (sw - fw) / 2 - path / 2
    trk_scale = float(rng.uniform(0.94, 1.06)) * (1 - grow * (n - 1) / 2)
    frames = []
    for t in range(n):
        ox = round(base_ox + vx * t) + int(rng.integers(-3, 4))
        oy = 16 + int(rng.integers(-6, 7))
        canvas = _background(style, config, ox, oy)
        flip = direction if view == SIDE else int(rng.choice([-1, 1]))
        size = fh * style.scale * look.height * trk_scale * (1 + grow * t) * float(
            rng.uniform(0.98, 1.02))
        feet = fh * style.anchor + float(rng.normal(0, 0.012)) * fh
        cx = fw / 2 + float(rng.normal(0, 0.045)) * fw
        _draw_person(canvas, look, view, flip, phase, cx, feet, size)
        illum = float(np.exp(rng.normal(0, 0.04)))
        frames.append(_finish(canvas, style, rng, illum, config))
        phase += step
    return frames


def _render_distractor(style: _Style, rng: np.random.Generator, config: SyntheticConfig,
                       junk: bool, look: _Look) -> Image.Image:
    """A gallery image without a valid identity: background or a bad partial detection."""
    fw, fh = config.image_width * _SUPERSAMPLE, config.image_height * _SUPERSAMPLE
    sw = style.scene.shape[1]
    canvas = _background(style, config, int(rng.integers(0, max(1, sw - fw))),
                         16 + int(rng.integers(-10, 11)))
    partial = junk or rng.random() < 0.5
    if partial:
        size = fh * float(rng.uniform(1.4, 2.6) if not junk else rng.uniform(2.0, 4.0))
        feet = fh + size * float(rng.uniform(-0.1, 0.6))
        cx = fw * float(rng.uniform(0.0, 1.0))
        _draw_person(canvas, look, int(rng.integers(3)), int(rng.choice([-1, 1])),
                     float(rng.uniform(0, 6.3)), cx, feet, size, shadow=False)
    blur = float(rng.uniform(1.0, 2.5)) if junk else 0.0
    return _finish(canvas, style, rng, float(np.exp(rng.normal(0, 0.05))), config, blur)


# ----------------------------------------------------------------------------------------
# Layout and writing
# ----------------------------------------------------------------------------------------

@dataclass
class _Job:
    """One tracklet (or one distractor/junk image) to render, with its file names."""

    index: int
    kind: str  # "train", "test", "distractor", "junk"
    pid: int
    cam: int  # 1-based
    frames: list[int]
    query: int = -1  # index into frames of the query image (test tracklets)

    def names(self) -> list[tuple[str, str]]:
        """(folder, file name) per frame, Market-1501 style ``PPPP_cCs1_FFFFFF_01.jpg``."""
        out = []
        for i, f in enumerate(self.frames):
            pid = "-1" if self.pid < 0 else f"{self.pid:04d}"
            folder = "train" if self.kind == "train" else ("query" if i == self.query else
                                                           "gallery")
            out.append((FOLDERS[folder], f"{pid}_c{self.cam}s1_{f:06d}_01.jpg"))
        return out


def _layout(config: SyntheticConfig) -> list[_Job]:
    """Who is seen by which cameras, tracklet lengths, query frames and frame numbers."""
    rng = np.random.default_rng([config.seed, _S_LAYOUT])
    m = config.cameras
    lo, hi = config.frames_per_tracklet
    jobs: list[_Job] = []
    for pid in range(1, config.train_ids + config.test_ids + 1):
        kind = "train" if pid <= config.train_ids else "test"
        k = _cameras_seen(rng, config, _lowest_cameras(config, kind))
        cams = sorted(int(c) + 1 for c in rng.choice(m, size=k, replace=False))
        for cam in cams:
            n = int(rng.integers(lo, hi + 1))
            q = int(rng.integers(n)) if kind == "test" else -1
            jobs.append(_Job(len(jobs), kind, pid, cam, [0] * n, q))
    for kind, count in (("distractor", config.distractors), ("junk", config.junk)):
        for _ in range(count):
            jobs.append(_Job(len(jobs), kind, 0 if kind == "distractor" else -1,
                             int(rng.integers(m)) + 1, [0]))
    # Each camera has its own clock: its tracklets occur one after another, in random order.
    for cam in range(1, m + 1):
        mine = [j for j in jobs if j.cam == cam]
        clock = 0
        for i in rng.permutation(len(mine)):
            clock += int(rng.integers(8, 40))
            job = mine[int(i)]
            job.frames = [clock + t for t in range(len(job.frames))]
            clock += len(job.frames)
        if clock > 999_999:
            raise ValueError("too many frames for 6-digit frame numbers; reduce the config")
    return jobs


def _write_jpeg(img: Image.Image, path: Path, quality: int) -> None:
    """Write one image (a seam for tests to inject failures)."""
    img.save(path, "JPEG", quality=quality)


def _camera_styles(config: SyntheticConfig) -> dict[int, _Style]:
    seed = config.effective_style_seed
    return {cam: _sample_style(np.random.default_rng([seed, _S_CAMERA, cam]), config)
            for cam in range(1, config.cameras + 1)}


def _scene_pool(config: SyntheticConfig) -> list[np.ndarray]:
    seed = config.effective_style_seed
    return [_scene(np.random.default_rng([seed, _S_SCENE, k]), config)
            for k in range(_SCENE_POOL)]


def _render_job(job: _Job, config: SyntheticConfig, looks: _Looks, styles: dict[int, _Style],
                scenes: list[np.ndarray]) -> tuple[list[Image.Image], int]:
    if config.random_styles:
        srng = np.random.default_rng([config.effective_style_seed, _S_TRACK_STYLE, job.index])
        style = _sample_style(srng, config, scenes)
    else:
        style = styles[job.cam]
    rng = np.random.default_rng([config.seed, _S_FRAMES, job.index])
    if job.kind in ("train", "test"):
        return _render_tracklet(looks(job.pid), style, len(job.frames), rng, config), \
            style.quality
    extra = _sample_look(np.random.default_rng([config.effective_appearance_seed, _S_EXTRA,
                                                job.index]))
    return [_render_distractor(style, rng, config, job.kind == "junk", extra)], style.quality


def _contact_sheet(root: Path, jobs: list[_Job], config: SyntheticConfig,
                   rows: int = 10) -> Image.Image:
    """Rows = the first train identities, columns = cameras; grey where a camera missed one."""
    w, h = config.image_width, config.image_height
    pids = sorted({j.pid for j in jobs if j.kind == "train"})[:rows]
    if len(pids) < rows:  # few train ids: fill with test identities
        pids += sorted({j.pid for j in jobs if j.kind == "test"})[: rows - len(pids)]
    font = ImageFont.load_default()
    left, head, gap = 64, 22, 4
    sheet = Image.new("RGB", (left + config.cameras * (w + gap), head + len(pids) * (h + gap)),
                      (250, 250, 250))
    d = ImageDraw.Draw(sheet)
    for c in range(config.cameras):
        d.text((left + c * (w + gap) + 4, 4), f"cam {c + 1}", fill=(0, 0, 0), font=font)
    by_key = {(j.pid, j.cam): j for j in jobs if j.kind in ("train", "test")}
    for r, pid in enumerate(pids):
        y = head + r * (h + gap)
        d.text((4, y + h // 2 - 6), f"id {pid:04d}", fill=(0, 0, 0), font=font)
        for c in range(config.cameras):
            x = left + c * (w + gap)
            job = by_key.get((pid, c + 1))
            if job is None:
                d.rectangle([x, y, x + w - 1, y + h - 1], fill=(160, 160, 160))
                continue
            names = job.names()
            folder, name = names[len(names) // 2]
            with Image.open(root / folder / name) as im:
                sheet.paste(im.convert("RGB"), (x, y))
    return sheet


def _count_files(root: Path) -> dict[str, int]:
    return {split: sum(1 for p in (root / folder).iterdir() if p.suffix == ".jpg")
            for split, folder in FOLDERS.items() if (root / folder).is_dir()}


def _read_metadata(root: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((root / METADATA_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("generator") == GENERATOR else None


def is_generated(root: Path, config: SyntheticConfig) -> bool:
    """True if ``root`` holds a complete dataset made by this generator with exactly ``config``.

    Lets callers cache: compares the stored config and version, and the image counts on disk.
    """
    root = Path(root)
    meta = _read_metadata(root)
    if meta is None or meta.get("version") != GENERATOR_VERSION:
        return False
    if meta.get("config") != config.to_dict():
        return False
    counts = meta.get("counts", {})
    on_disk = _count_files(root)
    return all(on_disk.get(s) == counts.get(f"{s}_images") for s in FOLDERS)


def generate(out: Path, config: SyntheticConfig = SyntheticConfig(),
             progress: bool = True) -> dict[str, Any]:
    """Write the dataset to ``out`` in the Market-1501 layout; return what ``synthetic.json`` holds.

    Idempotent: an existing complete dataset with the same config is reused. Atomic: files are
    written to a temporary sibling folder that is renamed into place only when complete.
    """
    config.validate()
    out = Path(out)
    if out.exists():
        if is_generated(out, config):
            meta = _read_metadata(out)
            assert meta is not None
            return meta
        if out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # an empty folder (e.g. made by a caller) holds nothing to protect
        else:
            meta = _read_metadata(out)
            why = ("a synthetic dataset with a different config or generator version"
                   if meta is not None else "not a complete synthetic dataset")
            raise DatasetError(f"{out}: exists and is {why}; remove it or choose another path")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        meta = _generate_into(tmp, config, progress)
        try:
            os.replace(tmp, out)
        except OSError:
            if is_generated(out, config):  # another process finished first: same content
                shutil.rmtree(tmp, ignore_errors=True)
                return meta
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return meta


def _generate_into(root: Path, config: SyntheticConfig, progress: bool) -> dict[str, Any]:
    from tqdm import tqdm

    for folder in FOLDERS.values():
        (root / folder).mkdir()
    jobs = _layout(config)
    looks = _Looks(config)
    styles = {} if config.random_styles else _camera_styles(config)
    scenes = _scene_pool(config) if config.random_styles else []
    total = sum(len(j.frames) for j in jobs)
    per_cam = {str(c): 0 for c in range(1, config.cameras + 1)}
    counts = {f"{s}_images": 0 for s in FOLDERS}
    with tqdm(total=total, desc="synthetic re-id", unit="img", disable=not progress,
              leave=False) as bar:
        for job in jobs:
            images, quality = _render_job(job, config, looks, styles, scenes)
            for img, (folder, name) in zip(images, job.names(), strict=True):
                _write_jpeg(img, root / folder / name, quality)
                split = next(s for s, f in FOLDERS.items() if f == folder)
                counts[f"{split}_images"] += 1
            per_cam[str(job.cam)] += len(images)
            bar.update(len(images))

    with (root / TRACKLETS_FILE).open("w", newline="") as fh:
        wr = csv.writer(fh)
        wr.writerow(["kind", "pid", "camid", "first_frame", "frames", "query_frame"])
        for j in jobs:
            q = j.frames[j.query] if j.query >= 0 else ""
            wr.writerow([j.kind, j.pid, j.cam, j.frames[0], len(j.frames), q])
    sheet = _contact_sheet(root, jobs, config)
    sheet.save(root / CONTACT_SHEET, "PNG")

    train_ids, test_ids = config.train_ids, config.test_ids
    counts.update({
        "train_ids": train_ids,
        "test_ids": test_ids,
        "train_tracklets": sum(j.kind == "train" for j in jobs),
        "test_tracklets": sum(j.kind == "test" for j in jobs),
        "distractor_images": config.distractors,
        "junk_images": config.junk,
        "images_per_camera": per_cam,
    })
    meta = {
        "generator": GENERATOR,
        "version": GENERATOR_VERSION,
        "config": config.to_dict(),
        "counts": counts,
        "pid_ranges": {"train": [1, train_ids] if train_ids else [],
                       "test": [train_ids + 1, train_ids + test_ids] if test_ids else []},
        "layout": "market1501",
        "folders": dict(FOLDERS),
    }
    (root / METADATA_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return meta
