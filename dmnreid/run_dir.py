"""One folder per run holding everything it produced, written so a crash loses no finished work.

    config.json          the resolved run configuration
    style.json           style transfer: per-camera losses, timings, camera gap before/after
    style_grid.png       test images of each camera, original above translated
    hops.jsonl           one line per random-walk hop
    evaluations.jsonl    one line per evaluation (stage, hop, rank1/5/10, mAP)
    metrics.json/.csv    the headline results (baseline, final, ...); metrics.json also
                         what they were computed from (``provenance``: the pretrained
                         weights' and stand-in's sha256, CPU capability, torch's version)
    walking.json         size of the walking state, and of the BN statistics in it
    checkpoints/         walking weights after every hop (the latest kept), for resume;
                         final.pt: the final (unified) model
    re-evaluations.jsonl the final model scored again in other modes (``evaluate-run``)
    map_curve.png        mAP and rank-1 over hops
"""

from __future__ import annotations

import json
import os
import time
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path

import pandas as pd
import torch

from dmnreid.atomic import save_torch, write_bytes
from dmnreid.checks import StateError, check_state

CHECKPOINT = "checkpoints/latest.pt"
FINAL_MODEL = "checkpoints/final.pt"
WALKING_JSON = "walking.json"
REEVALUATIONS = "re-evaluations.jsonl"
PROVENANCE = "provenance"  # metrics.json: what the run computed from, not a stage


def _load(path: Path) -> dict:
    """A saved checkpoint or model; a damaged file is named, not a torch traceback."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several unrelated types for a damaged file
        raise StateError(f"{path} is damaged or not a checkpoint ({type(err).__name__}); "
                         "this run cannot continue from it") from None
    if not isinstance(data, dict):
        raise StateError(f"{path}: not a checkpoint of this project")
    return data


class RunDir:
    """Writes a run's outputs; ``RunDir.resume`` reopens one to continue it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        (path / "checkpoints").mkdir(parents=True, exist_ok=True)
        # records per JSONL file, counted once and then kept as this object writes them:
        # a checkpoint after every hop asks, and re-reading the files made a run O(hops^2)
        self._lines: dict[str, int] = {}

    @classmethod
    def create(cls, output_dir: Path, name: str) -> RunDir:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = output_dir / f"{stamp}-{name}"
        suffix = 1
        while path.exists():
            suffix += 1
            path = output_dir / f"{stamp}-{name}-{suffix}"
        return cls(path)

    @classmethod
    def resume(cls, path: Path, key: str = "resume-from") -> RunDir:
        """Reopen a run directory; ``key`` names the setting that pointed here, for errors."""
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{key} {path}: not a run directory (no config.json)")
        return cls(path)

    def has_checkpoint(self) -> bool:
        return (self.path / CHECKPOINT).is_file()

    def write_json(self, name: str, data: object) -> None:
        write_bytes(self.path / name, json.dumps(data, indent=2, default=str).encode())

    def read_json(self, name: str) -> dict:
        path = self.path / name
        return json.loads(path.read_text()) if path.is_file() else {}

    def append(self, name: str, record: dict) -> None:
        with (self.path / name).open("a") as fh:
            fh.write(json.dumps(record) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        if name in self._lines:
            self._lines[name] += 1

    def count_lines(self, name: str) -> int:
        """Records in a JSONL file: read (not parsed) the first time, then kept up to date
        by :meth:`append` and :meth:`truncate_lines`."""
        if name not in self._lines:
            path = self.path / name
            self._lines[name] = sum(1 for line in path.open() if line.strip()) \
                if path.is_file() else 0
        return self._lines[name]

    def read_lines(self, name: str) -> list[dict]:
        path = self.path / name
        if not path.is_file():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def truncate_lines(self, name: str, keep: int) -> None:
        """Drop records past ``keep``: a resumed run redoes work its checkpoint does not hold."""
        lines = self.read_lines(name)[:keep]
        write_bytes(self.path / name, "".join(json.dumps(r) + "\n" for r in lines).encode())
        self._lines[name] = len(lines)

    def save_checkpoint(self, state: OrderedDict[str, torch.Tensor], info: dict,
                        head: OrderedDict[str, torch.Tensor] | None = None,
                        walkers: dict | None = None) -> None:
        """Walking weights (and a travelling head) after a step, with where the run stood;
        with several walkers, each one's (``Walkers.to_dict``).

        A non-finite state is refused (StateError): it would replace the last good one."""
        check_state(state, "checkpoint weights")
        if head is not None:
            check_state(head, "checkpoint head")
        for index, walker in enumerate(walkers["walkers"] if walkers else ()):
            check_state(walker["state"], f"checkpoint walker {index}")
        save_torch({"state": state, "head": head, "info": info, "walkers": walkers},
                   self.path / CHECKPOINT)

    def load_walkers(self) -> dict | None:
        """The walkers the last checkpoint saved (``Walkers.to_dict``), None with one."""
        walkers = _load(self.path / CHECKPOINT).get("walkers")
        if walkers is not None and not isinstance(walkers, dict):
            raise StateError(f"{self.path / CHECKPOINT}: its walkers are not a checkpoint's")
        return walkers

    def load_checkpoint(self, like: Mapping[str, torch.Tensor]
                        ) -> tuple[OrderedDict[str, torch.Tensor], dict,
                                   OrderedDict[str, torch.Tensor] | None]:
        """The last checkpoint, checked to be finite walking weights of the model ``like``."""
        path = self.path / CHECKPOINT
        data = _load(path)
        try:
            state = OrderedDict(data["state"])
            check_state(state, f"{path}", like=like)
            head = OrderedDict(data["head"]) if data.get("head") is not None else None
            if head is not None:
                check_state(head, f"{path} (head)")
            return state, dict(data["info"]), head
        except (KeyError, TypeError) as err:
            raise StateError(f"{path}: not a checkpoint of this project ({err})") from None

    def save_final_model(self, state: OrderedDict[str, torch.Tensor], info: dict) -> None:
        """The model the run ends with (after unification), for use and re-evaluation."""
        check_state(state, "final model")
        save_torch({"state": state, "info": info}, self.path / FINAL_MODEL)

    def load_final_model(self) -> tuple[OrderedDict[str, torch.Tensor], dict]:
        path = self.path / FINAL_MODEL
        if not path.is_file():
            raise FileNotFoundError(f"{self.path} has no final model ({FINAL_MODEL}): the run "
                                    "has not finished; continue it with resume-from first")
        data = _load(path)
        try:
            state = OrderedDict(data["state"])
            check_state(state, f"{path}")
            return state, dict(data["info"])
        except (KeyError, TypeError) as err:
            raise StateError(f"{path}: not a final model of this project ({err})") from None

    def write_metrics(self, metrics: dict[str, dict]) -> None:
        """metrics.json as given, metrics.csv as one row per stage."""
        self.write_json("metrics.json", metrics)
        rows = [{"stage": stage, **values} for stage, values in metrics.items()
                if isinstance(values, dict) and stage != PROVENANCE]
        pd.DataFrame(rows).to_csv(self.path / "metrics.csv", index=False)

    def plot_curve(self) -> None:
        """mAP and rank-1 against hops, from evaluations.jsonl."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        table = pd.DataFrame(self.read_lines("evaluations.jsonl"))
        if table.empty:
            return
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for metric in ("mAP", "rank1"):
            ax.plot(table["hop"], table[metric], marker="o", label=metric)
        ax.set_xlabel("hop")
        ax.set_ylabel("%")
        ax.set_title("retrieval on query/gallery during the walk")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(self.path / "map_curve.png", dpi=100)
        plt.close(fig)
