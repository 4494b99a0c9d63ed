"""Deployment: a real SuperLink and one real SuperNode per camera on 127.0.0.1.

Each SuperNode is given only its own camera folder (``--node-config data-dir=...``), as an
edge device would be; the ServerApp finds which node holds which camera by asking, and the
nodes evaluate on their own test images (federated evaluation with camera BN statistics).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dmnreid.config import RunConfig
from dmnreid.data_prep.partition import read_partition
from dmnreid.prepare import prepare_partitions
from tests.flower_harness import FlowerLink

RUN = {
    "synthetic-cameras": 3, "synthetic-train-ids": 10, "synthetic-test-ids": 6,
    "image-height": 32, "image-width": 16, "pretrained-weights": "none",
    "bn-statistics": "update", "walk-hops": 3,
    "local-epochs": 1, "batch-size": 8, "eval-every": 3, "seed": 5, "node-timeout": 120.0,
    "incremental-hops": 0, "style-iterations": 6, "style-height": 32, "style-width": 16,
    "style-batch-size": 2, "style-generator-filters": 8, "style-generator-blocks": 1,
    "style-discriminator-filters": 8, "bn-mode": "camera", "eval-mode": "federated",
}


def test_walk_over_real_supernodes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("DMNREID_CACHE", str(cache))
    partitions = tmp_path / "nodes"
    config = {**RUN, "partitions-dir": str(partitions), "output-dir": str(tmp_path / "out")}
    prepare_partitions(RunConfig.from_mapping(config))
    link = FlowerLink(tmp_path / "flwr-home", {"DMNREID_CACHE": str(cache)}, simulation=False)
    try:
        for node in read_partition(partitions)["nodes"]:
            link.start_supernode(f"data-dir='{partitions / node['node']}'")
        run_id, log = link.start_run(config)
        status = link.wait(run_id)
    finally:
        link.stop()
    assert status == "finished:completed", log[-3000:]
    run_dir = next((tmp_path / "out").iterdir())
    hops = [json.loads(line) for line in (run_dir / "hops.jsonl").read_text().splitlines()]
    assert len(hops) == 3 and {h["camera"] for h in hops} <= {1, 2, 3}
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert set(metrics) == {"baseline", "walk", "final"}
    assert all(0 <= metrics["final"][k] <= 100 for k in ("rank1", "mAP"))
    style = json.loads((run_dir / "style.json").read_text())  # trained on the nodes' own disks
    assert set(style["per_camera"]) == {"2", "3"}
    assert all(c["iterations"] == 6 for c in style["per_camera"].values())
    assert all(proc.poll() is not None for proc in link.supernodes)  # stopped by PID
