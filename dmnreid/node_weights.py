"""The pretrained weights a node builds its model from, found on the node itself.

A device holds none of the server's files. It either has its own copy of the weights file
(``weights-file`` in its node config, checked against the server's sha256 at the start of every
run), or it is sent the weights once by the server (``query.pretrained``: model weights, which
may travel) and keeps them in its own folder under ``pretrained/<sha256>.pt``. Every later
message names the weights by their sha256 only.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from dmnreid.atomic import save_torch
from dmnreid.reid.model import weights_digest

LOCAL_KEY = "weights-file"
STORE = "pretrained"


def _stored(directory: Path, sha256: str) -> Path:
    if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        raise ValueError(f"weights-sha256 {sha256!r} is not a sha256 digest")
    return directory / STORE / f"{sha256}.pt"


def own_copy(node_config: Mapping[str, object]) -> Path | None:
    """The node's own weights file, when its node config names one."""
    name = str(node_config.get(LOCAL_KEY, ""))
    return Path(name).expanduser() if name else None


def node_weights_file(directory: Path, node_config: Mapping[str, object],
                      sha256: str) -> Path | None:
    """The file a node loads for the run's weights (``sha256`` "" = no pretrained weights)."""
    if not sha256:
        return None
    local = own_copy(node_config)
    if local is not None:
        return local
    stored = _stored(directory, sha256)
    if not stored.is_file():
        raise FileNotFoundError(
            f"{directory.name} holds no pretrained weights with sha256 {sha256[:12]}...: the "
            "run's query.pretrained message did not reach this node")
    return stored


def holds_weights(directory: Path, node_config: Mapping[str, object], sha256: str) -> bool:
    """Whether the node already holds the run's weights. Its own file must be exactly the
    server's (a device with another file is told so, instead of training a different stem)."""
    local = own_copy(node_config)
    if local is None:
        return _stored(directory, sha256).is_file()
    if not local.is_file():
        raise FileNotFoundError(f"node config {LOCAL_KEY} {local}: no such file on this node")
    found = weights_digest(local)
    if found != sha256:
        raise ValueError(
            f"node config {LOCAL_KEY} {local} has sha256 {found[:12]}..., the run's pretrained "
            f"weights have {sha256[:12]}...: give this device the server's file, or remove "
            f"{LOCAL_KEY} from its node config to receive the weights from the server")
    return True


def store_weights(directory: Path, sha256: str, state: Mapping[str, torch.Tensor]) -> None:
    """Keep the weights the server sent, for this and later runs with the same weights."""
    save_torch(dict(state), _stored(directory, sha256))
