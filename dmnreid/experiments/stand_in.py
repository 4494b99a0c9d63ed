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
import json
import platform
from pathlib import Path

from dmnreid.config import ConfigError, RunConfig
from dmnreid.experiments.settings import add_run_config, configured, run_config
from dmnreid.provenance import short
from dmnreid.reid.pretrain import ensure_source_weights, stand_in_record, weights_path

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


def write_reference(cfg: RunConfig) -> str:
    weights = ensure_source_weights(cfg)
    record = stand_in_record(weights)
    REFERENCE.write_text(json.dumps({
        "settings": {k: cfg.to_mapping()[k] for k in SETTINGS},
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
