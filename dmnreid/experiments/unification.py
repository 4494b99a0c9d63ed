"""``unification``: pick-one for every node against the average of the nodes' models.

After the incremental walk every camera holds its last copy of the model (paper 3.5). A run
with ``unify = "pick-one"`` adopts one of them, chosen by the seed; which one is luck, so
this scores every camera's copy: the spread over cameras is what a user choosing pick-one
risks. ``average`` is the element-wise mean of all copies.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from dmnreid.experiments import tables
from dmnreid.experiments.ablation import SeedRun
from dmnreid.experiments.settings import add_common, configured, progress_printer, run_config
from dmnreid.experiments.settings import seeds as parse_seeds
from dmnreid.experiments.store import Store
from dmnreid.strategies.unification import average_states, pick_one


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common(parser, "experiments/unification")


def unification_rows(seed_run: SeedRun) -> list[dict]:
    """Every camera's copy and the average, for one seed (from the store when finished)."""
    done = seed_run.finished("unification")
    if done is None:
        network, walked, _ = seed_run.incremental("clusters")
        seed = seed_run.cfg.seed
        chosen = pick_one(sorted(walked.copies), seed)
        rows = []
        for camera, state in sorted(walked.copies.items()):
            seed_run.say(f"scoring camera {camera}'s copy")
            rows.append({"strategy": "pick-one", "camera": camera,
                         "seeded-pick": camera == chosen, **network.score(state)})
        seed_run.say(f"scoring the average of {len(walked.copies)} copies")
        # rounded as the server's unification rounds it (the model the nodes receive)
        average = network.wire(average_states([walked.copies[c] for c in sorted(walked.copies)]))
        rows.append({"strategy": "average", "camera": None, "seeded-pick": False,
                     **network.score(average)})
        done = seed_run.save({"seed": seed, "bn-mode": seed_run.cfg.bn_mode, "rows": rows},
                             "unification")
    shared = {k: v for k, v in done.items() if k != "rows"}
    return [{**shared, **row} for row in done["rows"]]


def summary_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Per strategy: mean ± std over seeds (pick-one: over seeds and cameras), and for
    pick-one the worst and best camera's mAP."""
    summary = tables.summarise(frame, ["strategy"])
    picks = frame[frame["strategy"] == "pick-one"]["mAP"]
    summary["mAP-worst"] = summary["strategy"].map({"pick-one": picks.min()})
    summary["mAP-best"] = summary["strategy"].map({"pick-one": picks.max()})
    seeded = frame[frame["seeded-pick"]]["mAP"]
    summary["mAP-seeded-pick"] = summary["strategy"].map({"pick-one": seeded.mean()})
    return summary


def plot(frame: pd.DataFrame, path: Path) -> None:
    """mAP of every camera's copy (dots, one column per seed) and the average (bar)."""
    fig = Figure(figsize=(6, 3.4))
    ax = fig.subplots()
    seeds = sorted(frame["seed"].unique())
    for i, seed in enumerate(seeds):
        part = frame[frame["seed"] == seed]
        picks = part[part["strategy"] == "pick-one"]
        ax.scatter([i - 0.15] * len(picks), picks["mAP"], color="tab:blue",
                   label="pick-one (each camera)" if i == 0 else None)
        average = part[part["strategy"] == "average"]["mAP"]
        ax.bar([i + 0.15], average, 0.25, color="tab:orange",
               label="average" if i == 0 else None)
    ax.set_xticks(range(len(seeds)), [f"seed {s}" for s in seeds])
    ax.set_ylabel("mAP")
    ax.set_title("unification: every camera's model vs the average")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def run(args: argparse.Namespace) -> int:
    base = run_config(args.run_config, eval_mode="server")
    store, printer = Store(args.out / "runs"), progress_printer("unification")
    rows = []
    for seed in parse_seeds(args.seeds):
        rows += unification_rows(SeedRun(configured(base, seed=seed), store,
                                         printer(f"seed={seed}")))
    frame = pd.DataFrame(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    frame.to_csv(args.out / "unification_runs.csv", index=False)
    text = tables.write(summary_table(frame), args.out, "unification",
                        title="Unification: pick-one vs average",
                        notes=f"bn-mode {base.bn_mode}, {tables.made_with(frame)}. pick-one: "
                              "mean ± std over seeds and "
                              "cameras (every camera's copy scored), worst and best camera, "
                              "and the camera the seed picks; average: over seeds.")
    plot(frame, args.out / "unification.png")
    print(text)
    return 0
