"""``scale``: what the whole pipeline costs as the camera network grows, each size a real
Flower simulation.

For every camera count M of ``--cameras`` it runs ``flwr run`` of this project on a SuperLink
of its own (``--federation-config num-supernodes=M``), on a synthetic network of M cameras
whose training identities per camera N stay fixed (``synthetic-ids-per-camera``; each identity
seen by 1 + Poisson(2) cameras, as on MSMT17), small images (the project's 64x32) and hops in
passes over the cameras (``walk-passes``, ``incremental-passes``, ``eval-passes``). Style
transfer is off unless ``--style``. Per size it reports, from the run directory: the seconds
the server waited and the message rounds of each phase (``rounds.json``), the bytes of each
phase and message type (``messages.json``), the clusters' pairwise precision, recall and NMI
against the true identities (``clustering.json``), the hops and the distinct cameras they
visited (``hops.jsonl``); and from the processes: the wall time of ``flwr run`` and the peak
resident memory of the ServerApp's process and of the largest simulation worker (the Ray
processes that run the ClientApps). ``OUT/scale.csv``, ``scale.md`` and ``scale.png`` (log-log,
with each phase's growth exponent: the least-squares slope of log y on log M).

Each size runs in ``OUT/runs/cameras-M/``; a finished size (its ``result.json``) is reused, not
redone, and refused when it was made with other settings.

What this command itself adds to the runs it measures (S sizes, a run of T seconds, P
processes in its SuperLink's process tree, H hops):

- a SuperLink started and stopped per size: a few seconds each, O(S) in all;
- memory sampling: every 0.5 s, O(P) small ``/proc`` reads (O(P x T / 0.5) over a run) on
  its own thread, O(P) memory (one peak per process);
- progress: ``rounds.json``, whose size is fixed by the phases, read every 2 s: O(T / 2);
- tabulation: ``hops.jsonl`` read once per size, O(H); the other files are fixed in size by
  the phases and message types; the tables are O(S x (phases + message types));
- fitting: one least-squares line per series, O(S); the plot O(S x phases).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from dmnreid.config import ConfigError, RunConfig
from dmnreid.data_prep.synthetic import mean_cameras_per_id
from dmnreid.deploy.local import (
    BIN,
    connection_config,
    free_ports,
    insecure_superlink_command,
    local_environment,
    stop_process,
    wait_for_port,
)
from dmnreid.experiments.settings import parse_overrides, progress_printer
from dmnreid.experiments.store import Store
from dmnreid.experiments.tables import markdown_table
from dmnreid.prepare import synthetic_config

DEFAULT_CAMERAS = "6,15,30,60"
# what the command sets beside the project's defaults (``--set`` overrides any of them)
SCALE = {
    "synthetic-ids-per-camera": 20,         # N, fixed while M grows
    "synthetic-cameras-per-id": "poisson",  # a person passes a few cameras, whatever M
    "synthetic-min-cameras-per-id": 1,      # singletons too, as on real data
    "style-transfer": False,
    "eval-mode": "federated",               # the evaluation's messages are counted too
}
# --style: the CycleGAN at small images, few iterations (its cost per node, not its quality)
STYLE = {"style-transfer": True, "style-height": 32, "style-width": 16,
         "style-iterations": 200, "style-batch-size": 2}
# test identities per camera (on average) unless synthetic-test-ids is set: the query and
# gallery grow with the network as the training identities do
TEST_IDS_PER_CAMERA = 10
# set by the command for every size, or meaningless for a synthetic network that grows
OWN_KEYS = {
    "synthetic-cameras": "--cameras sets it",
    "output-dir": "each size runs in OUT/runs/cameras-M",
    "run-name": "each size runs in OUT/runs/cameras-M",
    "resume-from": "a size is redone from its start",
    "evaluate-run": "every size runs the whole pipeline",
    "dataset": "the command runs the synthetic network",
    "data-root": "the command generates a synthetic network per size",
    "partitions-dir": "each size's node folders are cached apart",
    "synthetic-train-ids": "the identities per camera stay fixed: set "
                           "synthetic-ids-per-camera instead",
}
PHASES = ("set-up", "style transfer", "walk", "evaluation", "clustering", "incremental",
          "unification")
WALKS = ("walk", "incremental")
MB = 1e6
SAMPLE_SECONDS = 0.5
PROGRESS_SECONDS = 2.0
HEARTBEAT_SECONDS = 60.0
PROJECT = Path(__file__).resolve().parents[2]  # the Flower app folder `flwr run` packages


# ---------------------------------------------------------------------------------------
# pure helpers: input, settings, tabulation, fitting
# ---------------------------------------------------------------------------------------

def parse_cameras(text: str) -> list[int]:
    """``--cameras 6,15,30``: distinct camera counts, each at least 2 (a walk needs two
    cameras) and at most 99 (the synthetic network's limit), in increasing order."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError as err:
        raise ConfigError(f"--cameras {text!r}: expected comma-separated integers, "
                          "e.g. 6,15,30,60") from err
    if not values:
        raise ConfigError(f"--cameras {text!r}: expected at least one camera count")
    bad = [m for m in values if not 2 <= m <= 99]
    if bad:
        raise ConfigError(f"--cameras {text!r}: every camera count must be in 2..99 "
                          f"(a walk needs two cameras), got {bad}")
    if len(set(values)) != len(values):
        raise ConfigError(f"--cameras {text!r}: a camera count appears twice")
    return sorted(values)


def parse_sets(items: Sequence[str]) -> dict[str, object]:
    """``--set KEY=VALUE`` (TOML values, as ``flwr run --run-config``), refusing the keys the
    command sets itself."""
    values: dict[str, object] = {}
    for item in items:
        if "=" not in item or not item.partition("=")[0].strip():
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. local-epochs=1")
        values.update(parse_overrides([shlex.quote(item)]))
    for key in values:
        if key in OWN_KEYS:
            raise ConfigError(f"--set {key}: not settable here ({OWN_KEYS[key]})")
    return values


def size_settings(cameras: int, sets: Mapping[str, object], style: bool = False
                  ) -> dict[str, object]:
    """The run config of one size: the command's settings, ``--style``'s, the user's, M
    cameras and, unless set, test identities for TEST_IDS_PER_CAMERA per camera. Validated as
    a run validates them (ConfigError naming the key)."""
    settings = {**SCALE, **(STYLE if style else {}), **sets, "synthetic-cameras": cameras}
    if "synthetic-test-ids" not in sets:
        syn = synthetic_config(_config(settings))
        settings["synthetic-test-ids"] = max(
            1, round(TEST_IDS_PER_CAMERA * cameras / mean_cameras_per_id(syn, "test")))
    synthetic_config(_config(settings))  # refuses more identities than the network can have
    return settings


def _config(settings: Mapping[str, object]) -> RunConfig:
    return RunConfig.from_mapping({**RunConfig().to_mapping(), **settings})


def run_config_text(settings: Mapping[str, object]) -> str:
    """``--run-config`` of ``flwr run``: ``key=value`` pairs with TOML values."""
    return " ".join(f"{key}={json.dumps(value)}" for key, value in settings.items())


def process_role(cmdline: Sequence[str]) -> str:
    """What a process of a simulation SuperLink's tree is: ``server`` (``flwr-simulation``,
    which runs the ServerApp and the simulation engine; ``flwr-serverapp`` in deployment),
    ``worker`` (a Ray worker, which runs the ClientApps: ``default_worker.py``, renamed
    ``ray::...`` once it runs an actor), ``link`` (the SuperLink, its SuperExec) or ``ray``
    (Ray's own services)."""
    if cmdline and cmdline[0].startswith("ray::"):
        return "worker"
    names = {Path(arg).name for arg in cmdline[:3]}
    if names & {"flwr-simulation", "flwr-serverapp"}:
        return "server"
    if "default_worker.py" in names:
        return "worker"
    if names & {"flower-superlink", "flower-superexec"}:
        return "link"
    return "ray"


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def _phases(rounds: Mapping[str, dict]) -> list[str]:
    return [p for p in PHASES if p in rounds] + [p for p in rounds if p not in PHASES]


def walk_coverage(hops: Iterable[Mapping], phase: str) -> tuple[int, int]:
    """Hops of ``phase`` in ``hops.jsonl`` and the distinct cameras they trained on (a hop
    skipped for a failed camera trained nowhere)."""
    lines = [h for h in hops if h.get("phase") == phase]
    return len(lines), len({h["camera"] for h in lines if "skipped" not in h})


def size_row(run_dir: Path, measured: Mapping[str, object]) -> dict[str, object]:
    """One size's row from its run directory's files and the ``measured`` figures (wall
    seconds, peak memory). Columns ``seconds:<phase>`` (the server's wait), ``rounds:<phase>``,
    ``bytes:<phase>`` (sent and received), ``type-bytes:<message type>``."""
    config = _read_json(run_dir / "config.json")
    rounds = _read_json(run_dir / "rounds.json")
    messages = _read_json(run_dir / "messages.json")
    network = _read_json(run_dir / "network.json")
    clustering = _read_json(run_dir / "clustering.json")
    metrics = _read_json(run_dir / "metrics.json")
    hops_file = run_dir / "hops.jsonl"
    hops = [json.loads(line) for line in hops_file.read_text().splitlines() if line.strip()] \
        if hops_file.is_file() else []
    tracklets = network.get("cameras", {})
    cameras = int(config.get("synthetic-cameras", len(tracklets)))
    truth = clustering.get("diagnostics", {}).get("triangle", {})
    row: dict[str, object] = {
        "cameras": cameras, "train_ids": truth.get("true_ids", math.nan),
        "test_ids": config.get("synthetic-test-ids", math.nan),
        "tracklets": sum(tracklets.values()),
        "tracklets_per_camera": round(sum(tracklets.values()) / max(1, len(tracklets)), 1),
        "wall_seconds": measured["wall_seconds"]}
    for phase in WALKS:
        row[f"{phase}_hops"], row[f"{phase}_cameras"] = walk_coverage(hops, phase)
    row.update({"clusters": clustering.get("clusters", math.nan),
                "precision": truth.get("precision", math.nan),
                "recall": truth.get("recall", math.nan), "nmi": truth.get("nmi", math.nan),
                "mAP": metrics.get("final", {}).get("mAP", math.nan)})
    row.update({key: measured[key] for key in
                ("rss_server_mb", "rss_worker_mb", "workers", "rss_tree_mb")})
    phases = _phases(rounds)
    for phase in phases:
        row[f"seconds:{phase}"] = rounds[phase]["seconds"]
        row[f"rounds:{phase}"] = rounds[phase]["rounds"]
    row["seconds:other"] = round(measured["wall_seconds"] - sum(
        rounds[p]["seconds"] for p in phases), 3)  # start-up, the server's own work
    per_phase: dict[str, int] = {}
    for counts in messages.values():
        for phase, part in counts.get("phases", {}).items():
            per_phase[phase] = per_phase.get(phase, 0) + part["bytes_sent"] + \
                part["bytes_received"]
    for phase in _phases(per_phase):
        row[f"bytes:{phase}"] = per_phase[phase]
    for message_type, counts in messages.items():
        row[f"type-bytes:{message_type}"] = counts["bytes_sent"] + counts["bytes_received"]
    row["bytes:all"] = sum(per_phase.values())
    row["run_dir"] = str(run_dir)
    return row


def growth_exponent(cameras: Sequence[float], values: Sequence[float]) -> float:
    """k of values ~ c x cameras^k: the least-squares slope of log value on log cameras over
    the positive values; NaN with fewer than two distinct camera counts."""
    pairs = [(float(m), float(v)) for m, v in zip(cameras, values, strict=True)
             if m > 0 and v > 0 and math.isfinite(v)]
    if len({m for m, _ in pairs}) < 2:
        return math.nan
    x, y = np.log([m for m, _ in pairs]), np.log([v for _, v in pairs])
    return float(np.polyfit(x, y, 1)[0])


def scale_frame(rows: Sequence[Mapping[str, object]]) -> pd.DataFrame:
    """The rows as a table, in camera order; a phase or message type a size lacks counts 0."""
    frame = pd.DataFrame(rows).sort_values("cameras").reset_index(drop=True)
    counted = [c for c in frame.columns if c.split(":")[0] in
               ("seconds", "rounds", "bytes", "type-bytes")]
    frame[counted] = frame[counted].fillna(0)
    return frame


def series(frame: pd.DataFrame, prefix: str) -> list[str]:
    """The names after ``prefix:`` of the columns that have it, in the table's order."""
    return [c.split(":", 1)[1] for c in frame.columns if c.startswith(f"{prefix}:")]


def exponents(frame: pd.DataFrame, prefix: str) -> dict[str, float]:
    """Growth exponent of every ``prefix:<name>`` column against the camera count."""
    return {name: growth_exponent(frame["cameras"], frame[f"{prefix}:{name}"])
            for name in series(frame, prefix)}


def _k(value: float) -> str:
    return "" if math.isnan(value) else f"{value:.2f}".replace("-0.00", "0.00")


def _mb(value: float) -> str:
    """Bytes as MB: whole MB from 100 on (``1,510``), three significant digits below."""
    mb = value / MB
    return f"{mb:,.0f}" if mb >= 100 else f"{mb:.3g}"


def _column(frame: pd.DataFrame, name: str) -> pd.Series:
    return frame[name] if name in frame else pd.Series(0, index=frame.index)


def _by_size(frame: pd.DataFrame, cell: Callable[[pd.Series], str]) -> dict[str, str]:
    """One cell per size, ``M=<cameras>`` -> ``cell(row)``."""
    return {f"M={int(row['cameras'])}": cell(row) for _, row in frame.iterrows()}


def phase_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Per phase and size: seconds waited, rounds, MB; growth exponents of seconds and MB;
    last the whole run (the wall time of ``flwr run``, every round, every byte)."""
    seconds_k, bytes_k = exponents(frame, "seconds"), exponents(frame, "bytes")
    phases = [p for p in dict.fromkeys([*series(frame, "seconds"), *series(frame, "bytes")])
              if p != "all"]
    rows = []
    for phase in phases:
        seconds, rounds = _column(frame, f"seconds:{phase}"), _column(frame, f"rounds:{phase}")
        sent = _column(frame, f"bytes:{phase}")
        rows.append({"phase": phase, **_by_size(frame, lambda r, s=seconds, n=rounds, b=sent: (
            f"{s[r.name]:.1f} s, {int(n[r.name])} r, {_mb(b[r.name])} MB")),
            "k seconds": _k(seconds_k.get(phase, math.nan)),
            "k bytes": _k(bytes_k.get(phase, math.nan))})
    rounds = frame[[f"rounds:{p}" for p in series(frame, "rounds")]].sum(axis=1)
    rows.append({"phase": "all (wall time of flwr run)", **_by_size(frame, lambda r: (
        f"{r['wall_seconds']:.1f} s, {int(rounds[r.name])} r, {_mb(r['bytes:all'])} MB")),
        "k seconds": _k(growth_exponent(frame["cameras"], frame["wall_seconds"])),
        "k bytes": _k(bytes_k.get("all", math.nan))})
    return pd.DataFrame(rows)


def type_table(frame: pd.DataFrame) -> pd.DataFrame:
    """MB per message type and size, with growth exponents."""
    return pd.DataFrame([{"message type": name,
                          **_by_size(frame, lambda r, c=f"type-bytes:{name}": _mb(r[c])),
                          "k": _k(k)} for name, k in exponents(frame, "type-bytes").items()])


def memory_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Peak resident memory (MB) per process kind and size, with growth exponents."""
    rows = [{"process": label, **_by_size(frame, lambda r, c=column: f"{r[c]:.0f}"),
             "k": _k(growth_exponent(frame["cameras"], frame[column]))}
            for label, column in (("ServerApp (flwr-simulation)", "rss_server_mb"),
                                  ("largest worker", "rss_worker_mb"),
                                  ("whole tree (sum at one time)", "rss_tree_mb"))]
    return pd.DataFrame([*rows, {"process": "Ray workers (count)",
                                 **_by_size(frame, lambda r: str(int(r["workers"]))), "k": ""}])


def summary_table(frame: pd.DataFrame) -> pd.DataFrame:
    """One line per size: the network, wall time, hops and coverage, clustering, peaks."""
    def pair(hops: str, cameras: str) -> list[str]:
        return [f"{h} ({c})" for h, c in zip(frame[hops], frame[cameras], strict=True)]
    return pd.DataFrame({
        "cameras": frame["cameras"], "train ids": frame["train_ids"],
        "test ids": frame["test_ids"], "tracklets": frame["tracklets"],
        "wall s": frame["wall_seconds"].map("{:.1f}".format),
        "walk hops (cameras)": pair("walk_hops", "walk_cameras"),
        "incremental hops (cameras)": pair("incremental_hops", "incremental_cameras"),
        "precision": frame["precision"].map("{:.3f}".format),
        "recall": frame["recall"].map("{:.3f}".format),
        "NMI": frame["nmi"].map("{:.3f}".format),
        "mAP": frame["mAP"].map("{:.1f}".format),
        "server RSS MB": frame["rss_server_mb"].map("{:.0f}".format),
        "worker RSS MB": frame["rss_worker_mb"].map("{:.0f}".format),
        "MB sent+received": frame["bytes:all"].map(_mb)})


def markdown(frame: pd.DataFrame, command: str, settings: Mapping[str, object]) -> str:
    """The command, the settings, then the sizes, per phase, per message type and memory
    against M with growth exponents k (y ~ M^k)."""
    shown = ", ".join(f"{k} = {json.dumps(v)}" for k, v in settings.items()
                      if k not in ("synthetic-cameras", "synthetic-test-ids"))
    return "\n".join([
        "## Scale: the whole pipeline as the camera network grows", "",
        f"`{command}`", "",
        f"Each size a Flower simulation (`flwr run`, num-supernodes = M) with {shown}. "
        "Hops (cameras): the hops and the distinct cameras they trained on. Peak RSS: the "
        "kernel's high-water mark of each process (sampled every 0.5 s).", "",
        markdown_table(summary_table(frame)),
        "Per phase: seconds the server waited for replies, message rounds (r), MB sent and "
        "received; k: growth exponent, the least-squares slope of log y on log M "
        "(y ~ M^k). `other`: wall time outside the waits (start-up, the server's own work).",
        "", markdown_table(phase_table(frame)),
        "MB per message type (sent and received):", "", markdown_table(type_table(frame)),
        "Peak resident memory, MB:", "", markdown_table(memory_table(frame))])


def plot(frame: pd.DataFrame, path: Path) -> None:
    """Log-log: seconds waited and MB per phase (and the wall time, all bytes) against M,
    each series' growth exponent in the legend."""
    fig = Figure(figsize=(11, 6))
    left, right = fig.subplots(1, 2)
    ms = frame["cameras"].to_numpy(dtype=float)
    panels = ((left, "seconds", 1.0, "seconds (server waiting; wall: flwr run)",
               [("wall", frame["wall_seconds"])]),
              (right, "bytes", MB, "MB sent + received", []))
    for ax, prefix, unit, label, extra in panels:
        lines = [(name, frame[f"{prefix}:{name}"]) for name in series(frame, prefix)
                 if name != "all"] + extra + ([("all", frame["bytes:all"])]
                                              if prefix == "bytes" else [])
        for name, values in lines:
            values = values.to_numpy(dtype=float)
            keep = values > 0
            if not keep.any():
                continue
            k = growth_exponent(ms, values)
            style = "ko--" if name in ("wall", "all") else "o-"
            ax.plot(ms[keep], values[keep] / unit, style,
                    label=f"{name} (k = {_k(k) or 'n/a'})")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(ms, [str(int(m)) for m in ms])
        ax.minorticks_off()
        ax.set_xlabel("cameras M")
        ax.set_ylabel(label)
        ax.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)
    fig.suptitle("growth with the cameras: y ~ M^k (k: least-squares slope in log-log)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


# ---------------------------------------------------------------------------------------
# processes: the SuperLink, `flwr run`, memory sampling
# ---------------------------------------------------------------------------------------

def high_water_mark(pid: int) -> int:
    """The process's peak resident set (bytes), the kernel's VmHWM; 0 where there is no
    /proc (then the sampled resident sets count)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


class TreeSampler:
    """Samples, every ``interval`` seconds on a thread, the process tree under ``root``:
    each process's peak resident set (VmHWM, or the sampled resident set where the system
    has none; a process's growth in its last ``interval`` before it exits is missed) and the
    largest sum of the tree's resident sets at one time."""

    def __init__(self, root: int, interval: float = SAMPLE_SECONDS) -> None:
        try:
            import psutil
        except ModuleNotFoundError as err:
            raise ConfigError("scale measures memory with psutil: "
                              "pip install -e '.[scale]' (or pip install psutil)") from err
        self.psutil = psutil
        self.root, self.interval = root, interval
        self.peaks: dict[tuple[int, float], int] = {}
        self.roles: dict[tuple[int, float], str] = {}
        self.tree_peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while True:
            self.sample()
            if self._stop.wait(self.interval):
                return

    def sample(self) -> None:
        psutil = self.psutil
        try:
            root = psutil.Process(self.root)
            processes = [root, *root.children(recursive=True)]
        except psutil.Error:
            return
        total = 0
        for proc in processes:
            try:
                key = (proc.pid, proc.create_time())
                if key not in self.roles:
                    self.roles[key] = process_role(proc.cmdline())
                rss = proc.memory_info().rss
            except psutil.Error:
                continue
            total += rss
            self.peaks[key] = max(self.peaks.get(key, 0), rss, high_water_mark(proc.pid))
        self.tree_peak = max(self.tree_peak, total)

    def summary(self) -> dict[str, object]:
        def largest(role: str) -> int:
            return max((p for k, p in self.peaks.items() if self.roles[k] == role), default=0)
        return {"rss_server_mb": round(largest("server") / MB, 1),
                "rss_worker_mb": round(largest("worker") / MB, 1),
                "workers": sum(role == "worker" for role in self.roles.values()),
                "rss_tree_mb": round(self.tree_peak / MB, 1)}


class SimulationLink:
    """A simulation ``flower-superlink`` on 127.0.0.1 with a Flower home of its own (a
    connection named ``scale``), so a user's Flower configuration and SuperLink stay
    untouched; run in this environment (no dependency installation), stopped by its PID."""

    def __init__(self, home: Path, log: Path) -> None:
        for tool in ("flower-superlink", "flwr"):
            if not (BIN / tool).is_file():
                raise ConfigError(f"{BIN / tool} not found: scale runs Flower from this "
                                  "Python's environment")
        ports = free_ports()
        self.port = ports.control
        self.env = local_environment(home)
        (home / "config.toml").write_text(connection_config("scale", self.port))
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("w") as out:
            self.proc = subprocess.Popen(
                [*insecure_superlink_command(ports), "--simulation"], env=self.env, cwd=home,
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        self.runs: list[subprocess.Popen] = []
        try:
            wait_for_port(self.port, 60.0, self.proc)
        except BaseException:
            self.stop()
            raise

    def start_run(self, settings: Mapping[str, object], supernodes: int,
                  log: Path) -> subprocess.Popen:
        """``flwr run`` of this project, streaming its log to ``log`` until the run ends."""
        with log.open("w") as out:
            proc = subprocess.Popen(
                [str(BIN / "flwr"), "run", str(PROJECT), "--run-config",
                 run_config_text(settings), "--federation-config",
                 f"num-supernodes={supernodes}", "--stream"],
                env=self.env, cwd=PROJECT, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True)
        self.runs.append(proc)
        return proc

    def status(self, run_id: int, timeout: float = 60.0) -> str:
        """The run's final status from ``flwr ls`` (e.g. ``finished:completed``)."""
        deadline, status = time.monotonic() + timeout, "unknown"
        while time.monotonic() < deadline:
            result = subprocess.run([str(BIN / "flwr"), "ls", "--format", "json"],
                                    env=self.env, cwd=PROJECT, capture_output=True,
                                    text=True, timeout=60)
            try:
                runs = json.loads(result.stdout)["runs"]
                status = next(r["status"] for r in runs if int(r["run-id"]) == run_id)
            except (ValueError, KeyError, StopIteration):
                status = "unknown"
            if status.startswith("finished"):
                return status
            time.sleep(1.0)
        return status

    def stop(self) -> None:
        for proc in self.runs:
            stop_process(proc)
        stop_process(self.proc)


def _phase_now(before: Mapping[str, dict], after: Mapping[str, dict]) -> str | None:
    """The phase whose rounds grew between two readings of rounds.json (the last such)."""
    grown = [p for p, e in after.items() if e.get("rounds", 0) > before.get(p, {}).get(
        "rounds", 0) or e.get("messages", 0) > before.get(p, {}).get("messages", 0)]
    return grown[-1] if grown else None


def _newest_run(outputs: Path, before: set[Path]) -> Path | None:
    made = [p for p in outputs.glob("*") if p.is_dir() and p not in before] \
        if outputs.is_dir() else []
    return max(made, key=lambda p: p.stat().st_mtime) if made else None


def _read_rounds(run_dir: Path | None) -> dict:
    try:
        return _read_json(run_dir / "rounds.json") if run_dir else {}
    except ValueError:  # caught while being replaced
        return {}


def run_size(cameras: int, settings: Mapping[str, object], folder: Path,
             say: Callable[[str], None]) -> dict[str, object]:
    """One size through Flower: its row (run directory and measurements)."""
    outputs = folder / "outputs"
    before = set(outputs.glob("*")) if outputs.is_dir() else set()
    run_settings = {**settings, "output-dir": str(outputs), "run-name": f"scale-{cameras}"}
    log = folder / "flwr-run.log"
    with tempfile.TemporaryDirectory(prefix="dmnreid-scale-") as home:
        link = SimulationLink(Path(home), folder / "superlink.log")
        try:
            with TreeSampler(link.proc.pid) as sampler:
                start = time.monotonic()
                proc = link.start_run(run_settings, cameras, log)
                say(f"flwr run started ({cameras} SuperNodes); log {log}")
                run_dir, rounds, phase, beat = None, {}, None, start
                while proc.poll() is None:
                    time.sleep(PROGRESS_SECONDS)
                    run_dir = run_dir or _newest_run(outputs, before)
                    now = _read_rounds(run_dir)
                    current = _phase_now(rounds, now) or phase
                    elapsed = time.monotonic() - start
                    if current != phase or time.monotonic() - beat > HEARTBEAT_SECONDS:
                        entry = now.get(current, {})
                        say(f"phase {current or 'starting'}: "
                            f"{entry.get('rounds', 0)} rounds, "
                            f"{entry.get('seconds', 0):.0f} s waiting; {elapsed:.0f} s "
                            "into this size")
                        phase, beat = current, time.monotonic()
                    rounds = now or rounds
                wall = time.monotonic() - start
            found = re.search(r"Successfully started run (\d+)", log.read_text())
            status = link.status(int(found.group(1))) if found else "not started"
        finally:
            link.stop()
    run_dir = _newest_run(outputs, before)
    if status != "finished:completed" or run_dir is None:
        raise RuntimeError(f"M={cameras}: the run ended {status}; see {log}")
    say(f"finished in {wall:.0f} s ({run_dir.name})")
    return size_row(run_dir, {"wall_seconds": round(wall, 1), **sampler.summary()})


# ---------------------------------------------------------------------------------------
# the command
# ---------------------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cameras", default=DEFAULT_CAMERAS,
                        help=f"comma-separated camera counts M, each >= 2 "
                             f"(default {DEFAULT_CAMERAS})")
    parser.add_argument("--out", type=Path, default=Path("experiments/scale"),
                        help="output folder; finished sizes in it are reused "
                             "(default experiments/scale)")
    parser.add_argument("--style", action="store_true",
                        help="with style transfer (a small CycleGAN: 32x16, 200 iterations)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        dest="sets", help="a run-config value for every size (TOML value), "
                                          "e.g. --set local-epochs=1; repeatable")


def _shell(word: str) -> str:
    """``word`` as a shell reads it back: bare where it can be, in double quotes where it
    holds single quotes only (``"eval-mode='none'"``)."""
    quoted = shlex.quote(word)
    if quoted == word or any(c in word for c in '"$`\\!'):
        return quoted
    return f'"{word}"'


def command_line(args: argparse.Namespace) -> str:
    parts = ["--cameras", args.cameras, "--out", str(args.out),
             *(["--style"] if args.style else [])]
    for item in args.sets:
        parts += ["--set", item]
    return " ".join(["python -m dmnreid.experiments scale", *map(_shell, parts)])


def run(args: argparse.Namespace) -> int:
    sizes = parse_cameras(args.cameras)
    sets = parse_sets(args.sets)
    plans = {m: size_settings(m, sets, args.style) for m in sizes}  # all refused up front
    if not (PROJECT / "pyproject.toml").is_file():
        raise ConfigError(f"scale runs `flwr run` of the project folder, not found at "
                          f"{PROJECT}: install it with pip install -e")
    store, printer = Store(args.out / "runs"), progress_printer("scale")
    rows = []
    for m, settings in plans.items():
        say, name = printer(f"M={m}"), f"cameras-{m}"
        done = store.result(name)
        if done is not None:
            if done["settings"] != json.loads(json.dumps(settings)):
                changed = sorted(k for k in {*done["settings"], *settings}
                                 if done["settings"].get(k) != settings.get(k))
                raise ConfigError(f"{store.root / name} was made with other settings "
                                  f"({', '.join(changed)}): use another --out")
            say("finished before: reused")
            rows.append(done["row"])
            continue
        say(f"running the whole pipeline on {m} cameras")
        try:
            row = run_size(m, settings, store.folder(name), say)
        except RuntimeError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        rows.append(store.save_result({"settings": settings, "row": row}, name)["row"])
    frame = scale_frame(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    frame.to_csv(args.out / "scale.csv", index=False)
    text = markdown(frame, command_line(args), {k: v for k, v in plans[sizes[0]].items()})
    (args.out / "scale.md").write_text(text)
    plot(frame, args.out / "scale.png")
    print(text)
    return 0
