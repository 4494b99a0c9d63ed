"""Files written so that a crash leaves the old file or the new one, never half of one."""

from __future__ import annotations

import os
from pathlib import Path

import torch


def _temporary(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


def write_bytes(path: Path, data: bytes) -> None:
    tmp = _temporary(path)
    tmp.write_bytes(data)
    os.replace(tmp, path)


def save_torch(obj: object, path: Path) -> None:
    """``torch.save`` through a temporary file in the same folder."""
    tmp = _temporary(path)
    torch.save(obj, tmp)
    os.replace(tmp, path)
