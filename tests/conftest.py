"""Fixtures shared by several test modules."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from dmnreid.data_prep.synthetic import SyntheticConfig, generate
from dmnreid.reid.model import build_model
from dmnreid.reid.pretrain import torchvision_state
from tests.flower_harness import FlowerLink

# The tiny Flower run: 3 cameras, small images, no pretrained weights; walk, clustering,
# incremental walk, averaging unification; camera BN statistics, federated evaluation.
CAMERAS = 3
TINY = {
    "synthetic-cameras": CAMERAS, "synthetic-train-ids": 12, "synthetic-test-ids": 8,
    "image-height": 32, "image-width": 16, "pretrained-weights": "none",
    "bn-statistics": "update", "walk-hops": 4,
    "local-epochs": 1, "batch-size": 8, "eval-every": 2, "seed": 3,
    "incremental-hops": 2, "alpha": 0, "unify": "average", "recluster-every": 1,
    "style-height": 32, "style-width": 16, "style-iterations": 8, "style-batch-size": 2,
    "style-generator-filters": 8, "style-generator-blocks": 1, "style-discriminator-filters": 8,
    "bn-mode": "camera", "eval-mode": "federated",
}


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic dataset (3 cameras, distractors and junk included), per module."""
    root = tmp_path_factory.mktemp("syn") / "net"
    generate(root, SyntheticConfig(cameras=3, train_ids=10, test_ids=6, distractors=3, junk=1),
             progress=False)
    return root


def started_link(tmp_path_factory: pytest.TempPathFactory, name: str) -> Iterator[FlowerLink]:
    """A simulation SuperLink with its own Flower home and data cache, stopped afterwards."""
    home = tmp_path_factory.mktemp(name)
    server = FlowerLink(home / "flwr-home", {"DMNREID_CACHE": str(home / "cache")})
    yield server
    server.stop()


@pytest.fixture(scope="session")
def link(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FlowerLink]:
    """A simulation SuperLink for the whole session, so every module shares one tiny run."""
    yield from started_link(tmp_path_factory, "flwr")


@pytest.fixture(scope="session")
def tiny_run(link: FlowerLink, tmp_path_factory: pytest.TempPathFactory):
    """The tiny run (TINY) through Flower's simulation engine, run once per session: its
    status, log, run directory, message audit folder and data cache."""
    out = tmp_path_factory.mktemp("runs")
    # a weights file (the seeded initialisation, so the same model as "none"): the nodes get it
    # from the server (query.pretrained), never by path
    weights = out / "weights.pth"
    torch.save(torchvision_state(build_model("resnet18", None)), weights)
    config = {**TINY, "output-dir": str(out / "outputs"), "run-name": "tiny",
              "message-audit": str(out / "audit"), "pretrained-weights": str(weights)}
    run_id, log = link.start_run(config, supernodes=CAMERAS)
    status = link.wait(run_id)
    run_dirs = sorted((out / "outputs").glob("*-tiny"))
    return {"status": status, "log": log, "dir": run_dirs[0] if run_dirs else None,
            "audit": out / "audit", "cache": link.env["DMNREID_CACHE"]}


# The experiments' tiny network: TINY's data and models, 2 + 2 hops, seed 0, one clustering.
EXPERIMENT = {**{k: v for k, v in TINY.items() if k != "eval-mode"},
              "walk-hops": 2, "incremental-hops": 2, "recluster-every": 0, "seed": 0}
EXPERIMENT_CONFIG = " ".join(f"{k}={json.dumps(v)}" for k, v in EXPERIMENT.items())


@pytest.fixture(scope="session")
def experiment_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The data cache of the experiments' tests (node folders, CycleGANs)."""
    return tmp_path_factory.mktemp("experiments-cache")


@pytest.fixture(scope="session")
def unification_out(experiment_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``python -m dmnreid.experiments unification`` on the tiny network, run once."""
    from dmnreid.experiments.cli import main

    out = tmp_path_factory.mktemp("unification")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DMNREID_CACHE", str(experiment_cache))
        assert main(["unification", "--run-config", EXPERIMENT_CONFIG, "--seeds", "0",
                     "--out", str(out)]) == 0
    return out
