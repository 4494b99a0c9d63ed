"""``python -m dmnreid.experiments profile``: the paper's Table 2 (run time of each module) and
Table 3 (message sizes) for the run configuration, and with ``--paper`` also for the paper's
model and image sizes.

Times come from the node code itself on random images of the configured sizes
(:mod:`dmnreid.experiments.profiling_timing`). Message sizes come from a run's records with
``--run`` (every message type, :mod:`dmnreid.experiments.profiling_records`); for any
configuration, the payloads whose size depends on the model alone are measured on real
networks (:mod:`dmnreid.experiments.profiling_payloads`). Writes table2.csv, table3.csv and
tables.md under ``--out`` and prints the Markdown.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from dataclasses import asdict
from pathlib import Path
from statistics import mean
from typing import Any

import pandas as pd
import torch

from dmnreid.compute import resolve_device
from dmnreid.config import ConfigError, RunConfig, defaults
from dmnreid.data_prep.partition import read_partition
from dmnreid.data_prep.records import DatasetError
from dmnreid.experiments.profiling_payloads import model_payloads
from dmnreid.experiments.profiling_records import Measured, measured_sizes
from dmnreid.experiments.profiling_timing import PAPER_SECONDS, machine, measure_modules
from dmnreid.experiments.settings import add_run_config, configured, parse_overrides, run_config
from dmnreid.experiments.tables import markdown_table
from dmnreid.prepare import prepare_partitions
from dmnreid.run_dir import RunDir
from dmnreid.server_app import MESSAGES_JSON, NETWORK_JSON, ROUNDS_JSON

# the paper's model and image sizes, with the reference CycleGAN's network sizes
# (Zhu et al. 2017: 64 filters, 9 residual blocks at 256 px; 70x70 PatchGAN, 64 filters)
PAPER = {"arch": "resnet50", "image-height": 256, "image-width": 128,
         "style-height": 256, "style-width": 256, "style-generator-filters": 64,
         "style-generator-blocks": 9, "style-discriminator-filters": 64,
         "style-discriminator-layers": 3}
TABLES = ("2", "3")
KB = 1000
SHOWN_KEYS = ("arch", "image-height", "image-width", "batch-size", "freeze-stem",
              "bn-statistics", "bn-mode", "style-transfer", "style-height", "style-width",
              "style-batch-size", "style-generator-filters", "style-generator-blocks",
              "style-discriminator-filters", "style-discriminator-layers", "transfer-dtype",
              "feature-dtype", "eval-mode", "incremental-head", "flood-reach", "alpha")
TABLE3_COLUMNS = ["configuration", "source", "item", "server_to_node_kb", "node_to_server_kb",
                  "messages", "replies", "errors", "server_to_node_bytes",
                  "node_to_server_bytes", "carried_by", "note"]
COUNTS = ["messages", "replies", "errors"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_run_config(parser)
    parser.add_argument("--paper", action="store_true",
                        help="also profile the paper's sizes: " + ", ".join(
                            f"{k}={v}" for k, v in PAPER.items()))
    parser.add_argument("--out", type=Path, default=Path("experiments/profile"),
                        help="folder for table2.csv, table3.csv and tables.md")
    parser.add_argument("--repeats", type=int, default=5,
                        help="timed repeats per module after one warm-up; the median is shown")
    parser.add_argument("--paper-repeats", type=int, default=1,
                        help="repeats for the paper's sizes (a ResNet-50 and a full CycleGAN "
                             "step take seconds each on a CPU)")
    parser.add_argument("--run", type=Path,
                        help="a run directory: its settings (--run-config on top) and every "
                             f"message type's size as it measured them ({MESSAGES_JSON})")
    parser.add_argument("--threads", type=int,
                        help="CPU threads for torch (default: torch's own choice); on a "
                             "machine shared with other work fewer threads time more steadily")
    parser.add_argument("--tables", nargs="+", choices=TABLES, default=list(TABLES),
                        help="which tables to make (3 alone takes seconds)")


def run(args: argparse.Namespace) -> int:
    """Profile, write the tables and print the Markdown; 2, with the problem named, for
    settings or a run directory that cannot be used (before anything is measured)."""
    try:
        if min(args.repeats, args.paper_repeats, args.threads or 1) < 1:
            raise ConfigError("--repeats, --paper-repeats and --threads must be at least 1")
        recorded = RunDir.resume(args.run.expanduser(), "--run") if args.run else None
        configs = configurations(args.run_config, recorded, args.paper)
        measured = measured_sizes(recorded) if recorded and "3" in args.tables else []
        cameras = camera_tracklets(configs["configured"], recorded) \
            if "2" in args.tables else None
        device = resolve_device(configs["configured"].device)
    except (ConfigError, DatasetError, FileNotFoundError) as err:
        print(f"profile: error: {err}", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    host = machine(device)  # before the profile loads the machine itself
    table2 = time_table(configs, round(mean(cameras[0].values())), args) if cameras else None
    table3 = size_table(configs, measured) if "3" in args.tables else None
    text = markdown_report(args, host, configs, cameras, table2, table3, recorded)
    args.out.mkdir(parents=True, exist_ok=True)
    if table2 is not None:
        table2.to_csv(args.out / "table2.csv", index=False)
    if table3 is not None:
        table3.to_csv(args.out / "table3.csv", index=False)
    (args.out / "tables.md").write_text(text)
    print(text)
    return 0


def progress(text: str) -> None:
    print(f"[profile] {text}", file=sys.stderr, flush=True)


def configurations(items: list[str], recorded: RunDir | None,
                   paper: bool) -> dict[str, RunConfig]:
    """The configuration to profile (a run's saved settings, if given, under the
    ``--run-config`` ``items``), and with ``paper`` the same with the paper's sizes."""
    if recorded is None:
        cfg = run_config(items)
    else:
        overrides = parse_overrides(items)
        try:
            cfg = configured(RunConfig.from_mapping(recorded.read_json("config.json")),
                             **overrides)
        except ConfigError as err:
            raise ConfigError(f"{err} (settings: {recorded.path / 'config.json'} with "
                              "--run-config on top)") from None
    configs = {"configured": cfg}
    if paper:
        configs["paper"] = configured(cfg, **PAPER)
    return configs


def camera_tracklets(cfg: RunConfig, run: RunDir | None) -> tuple[dict[int, int], str]:
    """Tracklets per camera (a hop's head has a class per tracklet) and where they come from:
    the configured data's partition (prepared and cached as a run prepares it) or, with
    ``dataset = "devices"`` (the server holds no data), the run's network."""
    progress("reading the configured data (prepared on first use, as a run does)")
    partitions = prepare_partitions(cfg)
    if partitions is not None:
        nodes = read_partition(partitions)["nodes"]
        return ({int(n["camera"]): int(n["tracklets"]) for n in nodes},
                f"partition {partitions}")
    if run is None or not (run.path / NETWORK_JSON).is_file():
        raise ConfigError("dataset = 'devices': the server holds no data, so the number of "
                          "tracklets per camera is unknown; give --run DIR, a run on the devices")
    cameras = run.read_json(NETWORK_JSON)["cameras"]
    return {int(c): int(n) for c, n in cameras.items()}, str(run.path / NETWORK_JSON)


def time_table(configs: dict[str, RunConfig], num_classes: int,
               args: argparse.Namespace) -> pd.DataFrame:
    """Table 2: one row per configuration and module, in milliseconds."""
    rows = []
    for name, cfg in configs.items():
        repeats = args.paper_repeats if name == "paper" else args.repeats
        for timing in measure_modules(cfg, num_classes, repeats,
                                      lambda text, name=name: progress(f"{name}: {text}")):
            rows.append({
                "configuration": name, "module": timing.module, "unit": timing.unit,
                "batch": timing.batch, "median_ms": 1000 * timing.median,
                "min_ms": 1000 * min(timing.seconds), "max_ms": 1000 * max(timing.seconds),
                "repeats": len(timing.seconds), "paper_jetson_tx2_s": PAPER_SECONDS[timing.module],
            })
    return pd.DataFrame(rows)


def size_table(configs: dict[str, RunConfig], measured: list[Measured]) -> pd.DataFrame:
    """Table 3: the model's payloads per configuration, then the run's messages per type (the
    configured one's), in bytes and KB per message."""
    rows = []
    for name, cfg in configs.items():
        progress(f"{name}: the model's payloads")
        rows += [{"configuration": name, "source": "model", **asdict(p)}
                 for p in model_payloads(cfg)]
    rows += [{"configuration": "configured", **asdict(m)} for m in measured]
    table = pd.DataFrame(rows).rename(columns={"to_node": "server_to_node_bytes",
                                               "to_server": "node_to_server_bytes"})
    table = table.reindex(columns=TABLE3_COLUMNS)
    table["server_to_node_kb"] = table["server_to_node_bytes"] / KB
    table["node_to_server_kb"] = table["node_to_server_bytes"] / KB
    table[COUNTS] = table[COUNTS].astype("Int64")
    return table


def command_line(args: argparse.Namespace) -> str:
    """The command that makes these tables again."""
    parts = ["python", "-m", "dmnreid.experiments", "profile"]
    for item in args.run_config:
        parts += ["--run-config", item]
    if args.paper:
        parts += ["--paper", "--paper-repeats", str(args.paper_repeats)]
    if args.run:
        parts += ["--run", str(args.run)]
    if args.threads:
        parts += ["--threads", str(args.threads)]
    parts += ["--repeats", str(args.repeats), "--out", str(args.out), "--tables", *args.tables]
    return shlex.join(parts)


def _number(value: float | None, digits: int = 1) -> str:
    """Thousands separated; values under 1 with three decimals (a reply of a few bytes)."""
    if value is None or pd.isna(value):
        return ""
    return f"{value:,.{digits}f}" if value >= 1 or value == 0 else f"{value:.3f}"


def _setting(value: Any) -> str:
    return json.dumps(value) if isinstance(value, bool) else str(value)


def describe(cfg: RunConfig) -> str:
    """The settings that decide run times and message sizes, and every other non-default."""
    values = cfg.to_mapping()
    shown = ", ".join(f"{k}={_setting(values[k])}" for k in SHOWN_KEYS)
    default = defaults()
    others = {k: v for k, v in values.items() if v != default[k] and k not in SHOWN_KEYS}
    return shown + (f"; other non-defaults: {others}" if others else "")


def markdown_report(args: argparse.Namespace, host: dict[str, str],
                    configs: dict[str, RunConfig], cameras: tuple[dict[int, int], str] | None,
                    table2: pd.DataFrame | None, table3: pd.DataFrame | None,
                    recorded: RunDir | None) -> str:
    parts = ["# Run time and message sizes (the paper's Tables 2 and 3)", "",
             f"Command: `{command_line(args)}`", "", "## Machine", ""]
    parts += [f"- {k}: {v}" for k, v in host.items()]
    parts += ["", "## Configurations", ""]
    parts += [f"- **{name}**: {describe(cfg)}" for name, cfg in configs.items()]
    if "paper" in configs:
        parts.append("- the paper's sizes used: " + ", ".join(f"{k}={v}" for k, v in
                                                              PAPER.items()))
    if cameras is not None:
        tracklets, source = cameras
        parts.append(f"- data: {len(tracklets)} cameras, tracklets per camera "
                     f"{dict(sorted(tracklets.items()))} ({source})")
    if recorded is not None:
        parts.append(f"- run: {recorded.path}")
    if table2 is not None:
        parts += ["", *_table2_section(table2)]
    if table3 is not None:
        parts += ["", *_table3_section(table3, recorded)]
    return "\n".join(parts) + "\n"


def _module_label(row: Any) -> str:
    if row.unit == "per image":
        return f"{row.module} (per image)"
    return f"{row.module} ({row.unit} of {row.batch})"


def _table2_section(table: pd.DataFrame) -> list[str]:
    shown = table.assign(module=[_module_label(row) for row in table.itertuples()])
    wide = shown.pivot(index="module", columns="configuration", values="median_ms")
    wide = wide.reindex(shown["module"].drop_duplicates())
    out = pd.DataFrame({"module": wide.index})
    for name in wide.columns:
        repeats = int(table.loc[table["configuration"] == name, "repeats"].iloc[0])
        out[f"{name}: ms (median of {repeats})"] = [_number(v) for v in wide[name]]
    out["paper (Jetson TX2)"] = [f"{s:g} s" for s in shown.drop_duplicates("module")[
        "paper_jetson_tx2_s"]]
    return ["## Table 2: run time of each module", "",
            "Random images of the configured sizes, random initial weights; one warm-up call "
            "before the timed ones. Inference: one image per call. The paper's Table 2 was "
            "measured on an NVIDIA Jetson TX2 (its batch sizes are garbled there).", "",
            markdown_table(out)]


def _payloads(rows: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"payload": rows["item"],
                         "server → node KB": rows["server_to_node_kb"].map(_number),
                         "node → server KB": rows["node_to_server_kb"].map(_number),
                         "carried by": rows["carried_by"], "note": rows["note"]})


def _messages(rows: pd.DataFrame) -> pd.DataFrame:
    def count(column: str) -> pd.Series:
        return rows[column].map(lambda v: _number(v, 0))

    return pd.DataFrame({"message": rows["item"], "messages": count("messages"),
                         "server → node KB": rows["server_to_node_kb"].map(_number),
                         "replies": count("replies"),
                         "node → server KB": rows["node_to_server_kb"].map(_number),
                         "error replies": count("errors")})


def _table3_section(table: pd.DataFrame, recorded: RunDir | None) -> list[str]:
    lines = ["## Table 3: message sizes", "",
             "KB = 1000 bytes, as `message_bytes` counts them (arrays as serialised, settings "
             "and metrics as JSON). The paper's Table 3 repeats Table 2's rows and gives no "
             "sizes to compare with."]
    model = table[table["source"] == "model"]
    for name, rows in model.groupby("configuration", sort=False):
        lines += ["", f"### {name}: the payloads that depend on the model alone", "",
                  markdown_table(_payloads(rows))]
    if recorded is None:
        lines += ["", "Every other part of a message (memory ids, edges, sets and clusters of "
                  "the clustering rounds, query/gallery ids, settings and metrics) depends on "
                  "the data and the run: give `--run DIR`, a run directory, for every message "
                  f"type as that run measured it ({MESSAGES_JSON})."]
        return lines
    rounds = recorded.read_json(ROUNDS_JSON)
    lines += [
        "", f"### {recorded.path.name}: every message type as the run measured it", "",
        f"Mean KB per message each way: the server's count of every message it sent and "
        f"every reply it received ({MESSAGES_JSON}); `train.walk` also per phase (hops.jsonl).",
        "", markdown_table(_messages(table[table["source"] != "model"])), "",
        f"Message rounds per phase ({ROUNDS_JSON}): " + "; ".join(
            f"{phase} {int(v['rounds'])} rounds, {int(v['messages'])} messages"
            for phase, v in rounds.items())]
    return lines
