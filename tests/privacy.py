"""The privacy check every end-to-end test applies to what its nodes sent (message audit).

Nothing derived from pixels but model weights and feature vectors may leave a node: no paths,
no images, no camera statistics; scalars are numbers.
"""

from __future__ import annotations

import json
from pathlib import Path

from dmnreid.reid.camera_bn import is_bn_statistic

MESSAGE_TYPES = {"query.info", "query.pretrained", "train.style", "train.walk", "query.memory",
                 "query.top1", "query.triangle", "query.flood", "query.weights", "query.embed"}
EMBEDDING = {f"{split}-{k}" for split in ("query", "gallery")
             for k in ("items", "pids", "camids", "features")}
# what each clustering round's reply may hold: int64 ids only (edges, labels)
CLUSTERING = {"query.top1": {"pairs_owner", "pairs_member"},
              "query.triangle": {"pairs_owner", "pairs_member", "labels"},
              "query.flood": {"labels"}}


def audit_entries(folder: Path) -> list[dict]:
    """Every reply the nodes logged (``message-audit``)."""
    return [json.loads(line) for f in sorted(folder.glob("*.jsonl"))
            for line in f.read_text().splitlines()]


def _forbidden(value: object) -> bool:
    text = str(value).lower()
    return "/" in text or "\\" in text or any(
        ext in text for ext in (".jpg", ".jpeg", ".png", ".pt"))


def _check_arrays(message_type: str, name: str, entries: dict, weights: dict) -> None:
    """Model weights, 512-d float32 or float16 feature vectors (memory banks, embeddings,
    prototype centroids), or int64 ids/edges/labels: nothing else."""
    assert not any(is_bn_statistic(key) for key in entries), "camera statistics left a node"
    if name == "weights":
        assert set(entries) == set(weights)
        for key, array in entries.items():
            assert array["shape"] == list(weights[key].shape)
        return
    if name == "prototypes":  # the cluster-prototype memory: centroids and their ids
        assert set(entries) == {"vectors", "clusters", "cameras"}, set(entries)
        vectors = entries["vectors"]
        assert vectors["dtype"] in ("float32", "float16") and len(vectors["shape"]) == 2
        assert vectors["shape"][1] == 512
        for key in ("clusters", "cameras"):
            assert entries[key]["dtype"] == "int64"
            assert entries[key]["shape"] == vectors["shape"][:1]
        return
    assert name in ("memory", "payload"), name
    if message_type in CLUSTERING:
        assert set(entries) == CLUSTERING[message_type], (message_type, set(entries))
    for key, array in entries.items():
        if name == "memory" or key.endswith("-features"):
            assert key in ("features", *EMBEDDING) and array["dtype"] in ("float32", "float16")
            assert len(array["shape"]) == 2 and array["shape"][1] == 512
        elif key in EMBEDDING:  # an item's number, its person and camera
            assert array["dtype"] == "int64" and len(array["shape"]) == 1
        else:
            assert key in set().union(*CLUSTERING.values()), key
            assert array["dtype"] == "int64" and len(array["shape"]) == 1


def check_replies(entries: list[dict], walking: dict, generator: dict) -> None:
    """Every logged reply holds only what may leave a node (``walking``: the walking state's
    tensors, ``generator``: the CycleGAN generator's)."""
    assert entries, "no reply was logged"
    for entry in entries:
        assert entry["message_type"] in MESSAGE_TYPES, entry["message_type"]
        if entry["message_type"] in ("query.pretrained", "query.info"):
            assert set(entry["records"]) == {"metrics"}  # numbers only
        if entry["message_type"] == "train.style":  # numbers, and the generator's weights
            assert set(entry["records"]) <= {"metrics", "weights"}
        weights = generator if entry["message_type"] == "train.style" else walking
        for name, record in entry["records"].items():
            if record["kind"] == "array":
                _check_arrays(entry["message_type"], name, record["entries"], weights)
            else:
                for key, value in record["entries"].items():
                    assert value["type"] in ("int", "float"), (key, value)
                    assert not _forbidden(value["value"])
