"""One folder per experiment run: its result once finished, states later runs start from.

A finished run (``result.json`` present) is never redone, so an interrupted experiment
started again with the same command continues where it stopped.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path

import torch

from dmnreid.atomic import save_torch, write_bytes

State = OrderedDict[str, torch.Tensor]


class Store:
    def __init__(self, root: Path) -> None:
        self.root = root

    def folder(self, *parts: str) -> Path:
        path = self.root.joinpath(*parts)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def result(self, *parts: str) -> dict | None:
        """The finished run's result, or None when it has not finished."""
        path = self.root.joinpath(*parts, "result.json")
        return json.loads(path.read_text()) if path.is_file() else None

    def save_result(self, result: dict, *parts: str) -> dict:
        write_bytes(self.folder(*parts) / "result.json", json.dumps(result, indent=2).encode())
        return result

    def state(self, *parts: str) -> State | None:
        path = self.root.joinpath(*parts, "state.pt")
        if not path.is_file():
            return None
        return OrderedDict(torch.load(path, map_location="cpu", weights_only=True))

    def save_state(self, state: State, *parts: str) -> None:
        save_torch(OrderedDict(state), self.folder(*parts) / "state.pt")
