"""The style-transfer phase over Flower messages (paper 3.1), and its held-out check.

``train.style`` goes to every node but the target camera's, all at once: each trains its own
CycleGAN on its own disk and answers with losses, counts and timings and, when the server
holds the evaluator's query/gallery images, with the trained generator (model weights, in the
same reply: no further round) so that the server can translate those images and measure how
much closer to the target camera each camera's images come: ``style.json`` and
``style_grid.png``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from logging import INFO, WARNING
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from flwr.app import RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid

from dmnreid.checks import StateError, check_state
from dmnreid.compute import resolve_device
from dmnreid.config import RunConfig
from dmnreid.data_prep.partition import EVALUATOR_DIR
from dmnreid.messages import (
    WEIGHTS,
    NodeError,
    ask_nodes,
    causes,
    metrics_of,
    record_state,
)
from dmnreid.reid.evaluate import evaluate_features
from dmnreid.reid.images import cached_decode, resize
from dmnreid.reid.model import ReidNet
from dmnreid.reid.train import extract_features
from dmnreid.run_dir import RunDir
from dmnreid.style.networks import ResnetGenerator
from dmnreid.style.report import colour_gap, feature_gap, save_grid
from dmnreid.style.training import translate

STYLE_JSON = "style.json"
GRID = "style_grid.png"
GRID_IMAGES = 8
GAP_KEYS = ("colour_before", "colour_after", "feature_before", "feature_after",
            "target_map_before", "target_map_after")
GAP_IMAGES = 300  # per camera: enough for the statistics, bounded translation time


def held_out_images(partitions: Path, cfg: RunConfig) -> dict[int, tuple[torch.Tensor, np.ndarray]]:
    """Up to GAP_IMAGES query/gallery frames per camera at the style size (a seeded sample),
    with their identities (distractors and junk left out)."""
    folder = partitions / EVALUATOR_DIR
    table = pd.concat([pd.read_csv(folder / f"{s}.csv") for s in ("query", "gallery")])
    table = table[table["pid"] > 0]
    rng = np.random.default_rng(cfg.seed)
    out = {}
    for camera, group in table.groupby("camid"):
        rows = group.iloc[sorted(rng.choice(len(group), min(len(group), GAP_IMAGES),
                                            replace=False))]
        images = cached_decode(list(rows["frame"]), cfg.style_height, cfg.style_width,
                               folder / "cache", f"style-camera{camera}")
        out[int(camera)] = (images, rows["pid"].to_numpy())
    return out


def measure_gaps(generators: dict[int, ResnetGenerator],
                 images: dict[int, tuple[torch.Tensor, np.ndarray]], target: int,
                 model: ReidNet, cfg: RunConfig, grid_path: Path) -> dict:
    """Each camera's distance to the target camera, before and after translation.

    Colour and feature statistics say how far apart the styles are (the target camera's two
    halves give the "same camera" floor); retrieval of the target camera's images from the
    camera's images with the pretrained model (mAP, percent) says whether the translation kept
    who is in the picture while it changed the style.
    """
    if target not in images:
        raise NodeError(f"the evaluator holds no image of target camera {target}")

    def features(x: torch.Tensor) -> np.ndarray:
        return extract_features(model, resize(x, cfg.image_height, cfg.image_width),
                                device=resolve_device(cfg.device))

    reference, reference_pids = images[target]
    reference_features = features(reference)
    half = len(reference) // 2
    gaps: dict = {"floor": {
        "colour": colour_gap(reference[:half], reference[half:]),
        "feature": feature_gap(reference_features[:half], reference_features[half:])}}

    def retrieval(query: np.ndarray, pids: np.ndarray, camera: int) -> float | None:
        if not np.isin(pids, reference_pids).any():
            return None  # no identity in common with the target camera's sample
        _, mean_ap = evaluate_features(query, reference_features, pids, reference_pids,
                                       np.full(len(pids), camera),
                                       np.full(len(reference_pids), target))
        return 100 * mean_ap

    rows = []
    for camera, generator in sorted(generators.items()):
        if camera not in images:
            continue
        original, pids = images[camera]
        translated, _ = translate(generator, original)
        before, after = features(original), features(translated)
        gaps[camera] = {
            "colour_before": colour_gap(original, reference),
            "colour_after": colour_gap(translated, reference),
            "feature_before": feature_gap(before, reference_features),
            "feature_after": feature_gap(after, reference_features),
            "target_map_before": retrieval(before, pids, camera),
            "target_map_after": retrieval(after, pids, camera),
        }
        rows.append((camera, original[:GRID_IMAGES], translated[:GRID_IMAGES]))
    save_grid(rows, (target, reference[:GRID_IMAGES]), grid_path)
    return gaps


def mean_gaps(gaps: dict, cameras: Iterable[int]) -> dict[str, float | None]:
    """The mean of each measure over the cameras that have it."""
    values = {k: [gaps[c][k] for c in cameras if c in gaps and gaps[c][k] is not None]
              for k in GAP_KEYS}
    return {k: float(np.mean(v)) if v else None for k, v in values.items()}


def held_out_check(replies: dict[int, RecordDict], cfg: RunConfig, partitions: Path,
                   model: ReidNet, target: int, grid_path: Path) -> dict:
    """Measure every camera's generator (sent with its ``train.style`` reply) on the
    query/gallery images the server holds; logs the mean and returns the per-camera gaps."""
    generators = {}
    for camera, content in replies.items():
        generator = ResnetGenerator(cfg.style_generator_filters, cfg.style_generator_blocks)
        if WEIGHTS not in content:
            raise NodeError(f"camera {camera}: train.style reply without the generator")
        try:
            received = record_state(content[WEIGHTS])
            check_state(received, "generator", like=generator.state_dict())
        except StateError as err:
            raise NodeError(f"camera {camera} sent a generator that does not fit the run's "
                            f"style settings: {err}") from err
        generator.load_state_dict(received)
        generators[camera] = generator
    gaps = measure_gaps(generators, held_out_images(partitions, cfg), target, model, cfg,
                        grid_path)
    mean = mean_gaps(gaps, generators)
    level = INFO if mean["feature_after"] < mean["feature_before"] else WARNING
    log(level, "Camera gap to camera %d on test images (mean over cameras), before -> after "
        "translation: colour %.3f -> %.3f, features %.3f -> %.3f (same camera: %.3f / %.3f); "
        "retrieval of camera %d's identities with the pretrained model, mAP %s -> %s",
        target, mean["colour_before"], mean["colour_after"], mean["feature_before"],
        mean["feature_after"], gaps["floor"]["colour"], gaps["floor"]["feature"], target,
        *(f"{mean[k]:.1f}" if mean[k] is not None else "n/a"
          for k in ("target_map_before", "target_map_after")))
    return gaps


def style_phase(grid: Grid, nodes: list[tuple[int, int]], cfg: RunConfig, base_config: dict,
                run: RunDir, partitions: Path | None, model: ReidNet) -> dict:
    """Train every non-target node's CycleGAN, then measure the translation on the test
    images the server holds (none with ``dataset = "devices"``: no measurement)."""
    if (run.path / STYLE_JSON).is_file():
        log(INFO, "Style transfer already done for this run (%s)", STYLE_JSON)
        return run.read_json(STYLE_JSON)
    target = cfg.target_camera
    senders = [(node, camera) for node, camera in nodes if camera != target]
    log(INFO, "Style transfer: cameras %s each train a CycleGAN toward camera %d's style "
        "(%d iterations of batch %d at %dx%d)", [c for _, c in senders], target,
        cfg.style_iterations, cfg.style_batch_size, cfg.style_height, cfg.style_width)
    start = time.perf_counter()
    # every node trains at once; on shared hardware (simulation) they may take turns
    answers = ask_nodes(grid, senders, "train.style",
                        {**base_config, "send-generator": int(partitions is not None)},
                        cfg.node_timeout * max(1, len(senders)))
    if not answers.content:
        raise NodeError(f"no camera trained its CycleGAN: {causes(answers.missing)}")
    for camera, why in sorted(answers.missing.items()):
        log(WARNING, "Camera %d did not train its CycleGAN (%s): it walks on its own images",
            camera, why)
    per_camera = {c: metrics_of(content) for c, content in answers.content.items()}
    seconds = time.perf_counter() - start
    for camera, m in sorted(per_camera.items()):
        log(INFO, "camera %d: %d iterations (%s), cycle %.3f -> %.3f, %.3f s/batch, "
            "%.4f s/image translated", camera, m["iterations"],
            "reused" if m["reused"] else f"resumed at {m['resumed-from']}"
            if m["resumed-from"] else "trained", m["first-cycle"], m["last-cycle"],
            m["seconds-per-batch"], m["translate-seconds-per-image"])
    summary = {
        "target_camera": target, "phase_seconds": seconds,
        "missing": {str(c): why for c, why in sorted(answers.missing.items())},
        "per_camera": {str(c): per_camera[c] for c in per_camera},
        "seconds_per_batch": float(np.mean([m["seconds-per-batch"]
                                            for m in per_camera.values()])),
        "translate_seconds_per_image": float(np.mean([m["translate-seconds-per-image"]
                                                      for m in per_camera.values()])),
    }
    if partitions is None:
        log(INFO, "The server holds no test images (dataset = 'devices'): the translation is "
            "not measured")
    else:
        gaps = held_out_check(answers.content, cfg, partitions, model, target,
                              run.path / GRID)
        for camera, values in summary["per_camera"].items():
            values.update(gaps.get(int(camera), {}))
        summary |= {"gap_floor": gaps["floor"], "mean": mean_gaps(gaps, per_camera)}
    run.write_json(STYLE_JSON, summary)
    return summary
