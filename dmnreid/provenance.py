"""What a result was computed from: the pretrained weights by sha256, and the kernel path.

The same settings give other numbers from another stand-in (its pretraining once depended on
the machine, by 6 mAP), so every run (``metrics.json``) and every experiment row records the
stand-in's sha256, the CPU capability its own computations ran with and torch's version, and
nothing averages or continues across two stand-ins.
"""

from __future__ import annotations

import platform
from pathlib import Path

import torch

from dmnreid.config import ConfigError, RunConfig
from dmnreid.reid.pretrain import stand_in_record

STAND_IN = "stand-in-sha256"
UNRECORDED = "unrecorded"  # a row or run from before stand-ins were recorded


def provenance(cfg: RunConfig, weights: Path | None) -> dict[str, object]:
    """Flat fields for a result row: the stand-in's sha256 ("" for other weights), its
    ``source-seed``, and this process's CPU capability, threads and torch's version (the
    training after the stand-in is not pinned: those decide its last bits)."""
    record = stand_in_record(weights) if weights is not None else {}
    return {STAND_IN: record.get("sha256", ""),
            "source-seed": cfg.source_seed if record else None,
            "cpu-capability": torch.backends.cpu.get_cpu_capability(),
            "threads": torch.get_num_threads(), "torch": torch.__version__}


def run_provenance(cfg: RunConfig, weights: Path | None, weights_sha256: str) -> dict:
    """A run's record (``metrics.json``, ``provenance``): the row fields, the weights file's
    sha256 (what nodes match their copy by) and how a stand-in was pretrained."""
    record = stand_in_record(weights) if weights is not None else {}
    return {"pretrained-weights": cfg.pretrained_weights, "weights-sha256": weights_sha256,
            **provenance(cfg, weights), "stand-in-kernels": record.get("kernels", {}),
            "python": platform.python_version()}


def check_same_weights(saved: dict, current: dict, where: str) -> None:
    """Refuse to continue ``where`` (a run) from other pretrained weights than it started
    from (``run_provenance`` records, then and now), naming both. Stand-ins are compared by
    their tensors, other weights by their file."""
    key = STAND_IN if saved.get(STAND_IN) and current.get(STAND_IN) else "weights-sha256"
    then, now = saved.get(key), current.get(key)
    if then is not None and then != now:
        raise ConfigError(
            f"{where} started from pretrained weights {short(then)}, but "
            f"pretrained-weights = {current.get('pretrained-weights')!r} gives {short(now)} "
            "here: continuing would train one model on two stems. Start a new run, or give "
            "the weights the run started from as pretrained-weights")


def short(sha: object) -> str:
    text = str(sha or "")
    return text[:12] if text else "(none)"
