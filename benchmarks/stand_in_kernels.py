"""Why the stand-in differed between machines: pretraining under each CPU kernel path.

Pretrains the stand-in (``python -m dmnreid.reid.pretrain``, each in a process of its own)
under settings that force the kernel paths another machine would take: ATen's CPU capability,
oneDNN's instruction set, MKL's branch, the thread count; unpinned (the recipe as it ran
before the pinning) and pinned (``dmnreid.reid.kernels``) under a caller environment and CPU
affinity as far apart as this machine allows. For each: the largest difference of a learned
weight from
the first setting of its kind (unpinned or pinned) after one optimizer step, after one epoch
and at the end, the sha256 of the
weights, and the direct-transfer mAP they give on the default network (camera BN). Writes
``stand_in_kernels.csv`` and ``.md`` under ``--out``; a setting already there is not redone.

    python benchmarks/stand_in_kernels.py --out OUT [--only NAME,...] [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch

from dmnreid.experiments.driver import Network
from dmnreid.experiments.settings import configured, run_config
from dmnreid.experiments.tables import markdown_table
from dmnreid.reid import kernels
from dmnreid.reid.pretrain import record_path, source_data, stand_in_record, steps_per_epoch


@dataclass(frozen=True)
class Setting:
    name: str
    env: dict[str, str] = field(default_factory=dict)
    pinned: bool = False
    cpus: int = 0  # CPU affinity of the process: 0 = every CPU of this machine
    what: str = ""


SETTINGS = (
    Setting("this machine", what="unpinned, this machine's own paths"),
    Setting("aten-default", {"ATEN_CPU_CAPABILITY": "default"},
            what="ATen's plain kernels (a CPU without AVX2)"),
    Setting("aten-avx2", {"ATEN_CPU_CAPABILITY": "avx2"}, what="ATen at AVX2"),
    Setting("onednn-avx2", {"ONEDNN_MAX_CPU_ISA": "AVX2"}, what="oneDNN limited to AVX2"),
    Setting("avx2 machine", {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"},
            what="ATen and oneDNN at AVX2: what an AVX2-only machine runs"),
    Setting("mkl-compatible", {"MKL_CBWR": "COMPATIBLE"}, what="MKL's compatible branch"),
    Setting("1 thread", {"OMP_NUM_THREADS": "1"}, what="one thread instead of two"),
    Setting("pinned", pinned=True, what="pinned, caller's environment as it is"),
    Setting("pinned from another caller", {
        "ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41",
        "MKL_ENABLE_INSTRUCTIONS": "SSE4_2", "MKL_CBWR": "AVX512", "OMP_NUM_THREADS": "1"},
        pinned=True, cpus=1, what="pinned, from a caller that forces ATen's plain kernels, "
                                  "SSE for oneDNN and MKL and one thread, on one CPU"),
)


def pretrain(setting: Setting, folder: Path, run_config_json: str, steps: list[int]) -> Path:
    """The stand-in pretrained under ``setting`` into ``folder`` (kept if there already)."""
    weights = folder / "weights.pt"
    if weights.is_file() and record_path(weights).is_file():
        return weights
    folder.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **setting.env}
    if setting.pinned:
        env = kernels.pinned_environment(env)
    command = [sys.executable, "-m", "dmnreid.reid.pretrain", "--run-config", run_config_json,
               "--out", str(weights), "--snapshot-steps", ",".join(map(str, steps))]
    if not setting.pinned:
        command.append("--unpinned")
    affinity = sorted(os.sched_getaffinity(0))[:setting.cpus] if setting.cpus else None
    print(f"[{setting.name}] pretraining ({setting.what})", file=sys.stderr, flush=True)
    subprocess.run(command, env=env, check=True,
                   preexec_fn=(lambda: os.sched_setaffinity(0, affinity)) if affinity else None)
    return weights


def max_difference(a: Path, b: Path) -> float:
    """The largest difference between two stand-ins' learned weights (BN running statistics
    left out: their scale is the activations', not the weights')."""
    one, other = (torch.load(p, weights_only=True) for p in (a, b))
    return max(float((one[k].double() - other[k].double()).abs().max()) for k in one
               if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--only", default="", help="comma-separated setting names")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    cfg = run_config(args.set)
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    settings = [s for s in SETTINGS if not only or s.name in only]
    images, _, _ = source_data(cfg)
    steps = [1, steps_per_epoch(len(images))]
    rows, references = [], {}
    for setting in settings:
        folder = args.out / setting.name.replace(" ", "-")
        weights = pretrain(setting, folder, json.dumps(cfg.to_mapping()), steps)
        record = stand_in_record(weights)
        # unpinned settings against the first unpinned one, pinned against the first pinned
        reference = references.setdefault(setting.pinned, folder)
        network = Network(configured(cfg, pretrained_weights=str(weights)))
        scores = network.score(network.initial_state())
        rows.append({
            "setting": setting.name, "what": setting.what, "compared with": reference.name,
            "cpu-capability": record["kernels"]["cpu-capability"],
            "onednn": record["kernels"]["onednn"], "threads": record["kernels"]["threads"],
            "mkl-cbwr": record["kernels"]["mkl-cbwr"] or "off",
            **{f"max-diff step {s}": max_difference(folder / f"step-{s}.pt",
                                                    reference / f"step-{s}.pt")
               for s in steps},
            "max-diff end": max_difference(weights, reference / "weights.pt"),
            "sha256": record["sha256"][:12], "loss": record["loss"],
            "baseline mAP": scores["mAP"], "seconds": record["seconds"]})
        print(json.dumps(rows[-1]), flush=True)
    table = pd.DataFrame(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out / "stand_in_kernels.csv", index=False)
    shown = table.copy()
    for column in shown.columns:
        if column.startswith("max-diff"):
            shown[column] = shown[column].map(lambda v: "0" if v == 0 else f"{v:.2e}")
    shown["loss"] = shown["loss"].map(lambda v: f"{v:.4f}")
    shown["baseline mAP"] = shown["baseline mAP"].map(lambda v: f"{v:.1f}")
    shown["seconds"] = shown["seconds"].map(lambda v: f"{v:.0f}")
    (args.out / "stand_in_kernels.md").write_text(markdown_table(shown))
    print(markdown_table(shown))


if __name__ == "__main__":
    main()
