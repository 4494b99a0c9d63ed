"""``stand-in``: does this machine pretrain the stand-in docs/results were made with?

README's and docs/results' figures start from one stand-in, named by its sha256 in
``reference_stand_in.json`` (beside this module). This pretrains the stand-in here (pinned,
cached as a run would) and compares. ``--epochs 1`` compares the first epoch only (the
reference records every epoch's sha256; a shorter pretraining is the longer one's start): the
quick check CI runs. ``--write-reference`` makes this machine's stand-in the reference, for
whoever makes docs/results again.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
from pathlib import Path

import numpy as np
import PIL

from dmnreid.config import ConfigError, RunConfig
from dmnreid.experiments.settings import add_run_config, configured, run_config
from dmnreid.provenance import short
from dmnreid.reid.pretrain import (
    ensure_source_weights,
    source_data,
    stand_in_record,
    weights_path,
)

REFERENCE = Path(__file__).with_name("reference_stand_in.json")
# the settings that make a stand-in: the reference holds for these only
SETTINGS = ("arch", "image-height", "image-width", "source-ids", "source-epochs",
            "source-seed", "synthetic-cameras")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_run_config(parser)
    parser.add_argument("--epochs", type=int, default=0,
                        help="compare after this many epochs of pretraining (default: all, "
                             "the stand-in itself; 1 takes about a minute or two)")
    parser.add_argument("--write-reference", action="store_true",
                        help=f"record this machine's stand-in as the reference ({REFERENCE})")


def cpu_model() -> str:
    """The CPU's model name, for the record (Linux; the platform's processor elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def reference() -> dict:
    return json.loads(REFERENCE.read_text())


def check(cfg: RunConfig, epochs: int = 0) -> tuple[bool, str]:
    """Whether this machine's stand-in for ``cfg`` (after ``epochs`` epochs, 0 = all) is the
    reference's, and a message saying so and, if not, what to do."""
    ref = reference()
    given = {k: cfg.to_mapping()[k] for k in SETTINGS}
    if given != ref["settings"]:
        differ = sorted(k for k in SETTINGS if given[k] != ref["settings"][k])
        raise ConfigError("the reference stand-in was pretrained with other settings ("
                          + ", ".join(f"{k} = {ref['settings'][k]!r}" for k in differ)
                          + "): there is nothing to compare these with")
    total = cfg.source_epochs
    epochs = epochs or total
    if not 1 <= epochs <= total:
        raise ConfigError(f"--epochs {epochs}: expected 1 to source-epochs = {total}")
    images = source_fingerprint(cfg)
    if images["sha256"] != ref["source-images"]["sha256"]:
        return False, (
            "This machine renders other source images for the stand-in than docs/results "
            f"were made with (sha256 {short(images['sha256'])} here, "
            f"{short(ref['source-images']['sha256'])} in {REFERENCE.name}), so no pretraining "
            "can give its weights. The synthetic images depend on the libraries that draw and "
            f"encode them: here {json.dumps(images['libraries'])}, reference "
            f"{json.dumps(ref['source-images']['libraries'])}. What to do: install those "
            "versions (pip install 'numpy==...' 'pillow==...') and run this again.")
    weights = ensure_source_weights(configured(cfg, source_epochs=epochs))
    ours = stand_in_record(weights)
    wanted = ref["epochs-sha256"][epochs - 1]
    what = "the stand-in" if epochs == total else f"the stand-in's first {epochs} epoch(s)"
    if ours["sha256"] == wanted:
        return True, (f"This machine pretrains {what} docs/results were made with "
                      f"(sha256 {short(wanted)}, {weights}): README's figures apply here.")
    return False, (
        f"This machine pretrains other weights for {what} than docs/results were made with: "
        f"sha256 {short(ours['sha256'])} here, {short(wanted)} in {REFERENCE.name} (made on "
        f"{ref['machine']}). README's and docs/results' figures will not come out exactly "
        f"here.\n  kernels here:      {json.dumps(ours['kernels'])}\n"
        f"  kernels reference: {json.dumps(ref['kernels'])}\n"
        "What to do: copy the stand-in's two files (.pt and .json) from a machine where this "
        f"check passes to {weights_path(cfg).with_suffix('.*')} (they are used as they are), "
        "or give the .pt file as pretrained-weights = its path; and report this machine (CPU "
        "model, the kernel lines above) in an issue, "
        "since the pinned pretraining is meant to give the same bits on every x86-64 CPU.")


def source_fingerprint(cfg: RunConfig) -> dict:
    """The sha256 of the stand-in's training images (decoded, as the pretraining sees them)
    and labels, with the versions of the libraries that render and encode them: the first
    thing two machines' stand-ins can differ in."""
    images, labels, _ = source_data(cfg)
    digest = hashlib.sha256(f"{tuple(images.shape)}|".encode())
    digest.update(images.numpy().tobytes())
    digest.update(labels.numpy().tobytes())
    return {"sha256": digest.hexdigest(),
            "libraries": {"numpy": np.__version__, "pillow": PIL.__version__}}


def write_reference(cfg: RunConfig) -> str:
    weights = ensure_source_weights(cfg)
    record = stand_in_record(weights)
    REFERENCE.write_text(json.dumps({
        "settings": {k: cfg.to_mapping()[k] for k in SETTINGS},
        "source-images": source_fingerprint(cfg),
        "sha256": record["sha256"], "epochs-sha256": record["epochs-sha256"],
        "kernels": record["kernels"], "machine": cpu_model(),
        "loss": record["loss"], "accuracy": record["accuracy"]}, indent=2) + "\n")
    return f"{REFERENCE} now names stand-in {short(record['sha256'])} ({weights})"


def run(args: argparse.Namespace) -> int:
    cfg = run_config(args.run_config)
    if args.write_reference:
        print(write_reference(cfg))
        return 0
    same, message = check(cfg, args.epochs)
    print(message)
    return 0 if same else 1
