"""``python -m dmnreid.status RUN_DIR [--watch SECONDS]``: where a run stands, for the
operator of a camera network.

Reads the run directory only (never the SuperLink, never a node), so it works while the run
is being written, after it stopped, and on a copy. A line still being written is skipped,
not an error. Prints the phase, the walk's hop and step out of the total, the cameras left
out and back, the last evaluation, the bytes so far, an ETA for the walks from the measured
step times, and the command that resumes the run if it stopped.

Reads O(H) lines for H hops so far (hops.jsonl once), and files of a size fixed by the
phases otherwise.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

from dmnreid.config import ConfigError, RunConfig
from dmnreid.strategies.walkers import steps

FINAL = "checkpoints/final.pt"
RECENT_STEPS = 5  # the ETA's step time: the mean of the last few steps' round trips


class NotARunDirectory(ValueError):
    """The folder given is not a run directory of this project."""


def read_json(path: Path) -> dict:
    """A JSON file of the run, {} when absent or (being replaced) unreadable."""
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def read_lines(path: Path) -> list[dict]:
    """The complete records of a JSONL file; a line still being written is skipped."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def phase_steps(hops: int, segment: int, walkers: int) -> int:
    """Steps of a phase of ``hops`` hops whose steps restart every ``segment`` hops."""
    segment = segment or hops
    return sum(len(steps(first, min(first + segment, hops), walkers))
               for first in range(0, hops, segment)) if hops else 0


@dataclass
class Phase:
    """A walk's progress: hops (rounds under FedAvg) and steps done out of the total."""

    name: str
    hops: int
    total_hops: int
    steps: int
    total_steps: int
    step_seconds: float | None  # the recent steps' mean round trip

    @property
    def eta(self) -> float | None:
        if self.step_seconds is None:
            return None
        return (self.total_steps - self.steps) * self.step_seconds


@dataclass
class Status:
    """Where a run stands, as its files tell."""

    path: Path
    stage: str
    finished: bool
    walks: list[Phase] = field(default_factory=list)
    left_out: dict[str, str] = field(default_factory=dict)
    returned: list[str] = field(default_factory=list)
    evaluation: dict | None = None
    bytes: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def resume_command(self) -> str:
        return f"flwr run . [FEDERATION] --run-config \"resume-from='{self.path}'\""


def run_status(path: Path) -> Status:
    """The status of the run directory ``path``; NotARunDirectory for another folder."""
    path = path.expanduser().resolve()
    if not path.is_dir():
        raise NotARunDirectory(f"{path}: no such folder")
    saved = read_json(path / "config.json")
    if not saved:
        raise NotARunDirectory(f"{path}: not a run directory of dmnreid (no readable "
                               "config.json); give the folder the ServerApp logged as "
                               "'Run directory'")
    network = read_json(path / "network.json")
    hops = read_lines(path / "hops.jsonl")
    evaluations = read_lines(path / "evaluations.jsonl")
    messages = read_json(path / "messages.json")
    status = Status(path, "set-up", (path / FINAL).is_file())
    status.left_out = {str(c): str(why) for c, why in network.get("left_out", {}).items()}
    status.returned = sorted({str(e["camera"]) for e in network.get("events", [])
                              if e.get("event") == "rejoined"}, key=int)
    status.evaluation = evaluations[-1] if evaluations else None
    status.bytes = sum(int(m.get("bytes_sent", 0)) + int(m.get("bytes_received", 0))
                       for m in messages.values() if isinstance(m, dict))
    try:
        cfg = RunConfig.from_mapping(saved)
    except ConfigError as err:
        status.notes.append(f"config.json is not this version's ({err}): totals unknown")
        cfg = None
    cameras = len(network.get("cameras", {}))
    if cfg is not None and cameras:
        status.walks = walk_phases(cfg, cameras, hops)
    status.stage = stage(cfg, status, hops, path)
    return status


def walk_phases(cfg: RunConfig, cameras: int, hops: list[dict]) -> list[Phase]:
    """The walk and the incremental walk: done and total, with the recent step time."""
    plan = cfg.schedule(cameras)
    walkers = cfg.walkers if cfg.walk_strategy == "random-walk" else 1
    phases = []
    for name, total, segment in (("walk", plan.walk, plan.walk),
                                 ("incremental", plan.incremental, plan.recluster_every)):
        if not total:
            continue
        mine = [h for h in hops if h.get("phase") == name]
        done_steps = sorted({int(h.get("step", h["hop"])) for h in mine if "hop" in h})
        trips: dict[int, float] = {}
        for record in mine:
            if "round_trip_seconds" in record:
                trips[int(record.get("step", record["hop"]))] = \
                    float(record["round_trip_seconds"])
        recent = [trips[s] for s in sorted(trips)[-RECENT_STEPS:]]
        # a walk not started yet: its steps train as long as the walk's before it
        seconds = sum(recent) / len(recent) if recent else \
            (phases[-1].step_seconds if phases else None)
        phases.append(Phase(name, 1 + max((int(h["hop"]) for h in mine), default=-1), total,
                            len(done_steps), phase_steps(total, segment, walkers), seconds))
    return phases


def stage(cfg: RunConfig | None, status: Status, hops: list[dict], path: Path) -> str:
    """The phase the run is in (or stopped in)."""
    if status.finished:
        return "finished"
    if not hops:
        if cfg is not None and cfg.style_transfer and not (path / "style.json").is_file():
            return "style transfer"
        return "set-up" if status.evaluation is None else "walk"
    walks = {p.name: p for p in status.walks}
    last = str(hops[-1].get("phase", "walk"))
    current = walks.get(last)
    if current is None or current.hops < current.total_hops:
        return last
    if last == "walk" and "incremental" in walks:
        return "clustering"
    return "unification" if last == "incremental" else "evaluation"


def duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "unknown"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def render(status: Status) -> str:
    """The status as the operator reads it."""
    lines = [f"Run {status.path}", f"  phase: {status.stage}"]
    for phase in status.walks:
        lines.append(f"  {phase.name}: hop {phase.hops}/{phase.total_hops}, step "
                     f"{phase.steps}/{phase.total_steps}")
    remaining = [p for p in status.walks if p.hops < p.total_hops]
    if remaining and not status.finished:
        etas = [p.eta for p in remaining]
        known = None if any(e is None for e in etas) else sum(etas)
        unknown = " (plus the clustering's rounds: unknown)" \
            if any(p.name == "incremental" for p in remaining) else ""
        lines.append(f"  ETA of the walks: {duration(known)}{unknown}, from the last "
                     f"{RECENT_STEPS} steps' round trips; evaluations not counted")
    out = ", ".join(f"{c} ({why})" for c, why in sorted(status.left_out.items()))
    lines.append(f"  cameras left out: {out or 'none'}")
    lines.append(f"  cameras back after a failure: {', '.join(status.returned) or 'none'}")
    if status.evaluation is not None:
        e = status.evaluation
        lines.append(f"  last evaluation: {e.get('stage')} after {e.get('hop')} hops, mAP "
                     f"{float(e.get('mAP', math.nan)):.1f}, rank-1 "
                     f"{float(e.get('rank1', math.nan)):.1f}")
    else:
        lines.append("  last evaluation: none yet")
    lines.append(f"  bytes so far: {status.bytes / 1e6:,.1f} MB sent and received")
    lines += [f"  note: {note}" for note in status.notes]
    if not status.finished:
        lines.append(f"  if it stopped, resume with: {status.resume_command}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dmnreid.status", description=__doc__.split(
        "\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="the run directory (outputs/<stamp>-<name>)")
    parser.add_argument("--watch", type=float, default=0.0, metavar="SECONDS",
                        help="print again every SECONDS until the run finishes (Ctrl-C stops)")
    args = parser.parse_args(argv)
    if args.watch < 0:
        parser.error("--watch takes seconds > 0")
    try:
        while True:
            status = run_status(args.run_dir)
            print(render(status), flush=True)
            if not args.watch or status.finished:
                return 0
            time.sleep(args.watch)
            print()
    except NotARunDirectory as err:
        print(f"error: {err}")
        return 2
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
