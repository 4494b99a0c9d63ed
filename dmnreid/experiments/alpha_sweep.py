"""``alpha-sweep``: the paper's parameter analysis of the triangle threshold alpha.

For each alpha, from the same rw+t weights per seed: the clusters against the true
identities (count, pairwise precision and recall, NMI) and mAP after the incremental walk
on those clusters. Two panels: clusters and mAP against alpha.
"""

from __future__ import annotations

import argparse

import pandas as pd
from matplotlib.figure import Figure

from dmnreid.config import ConfigError
from dmnreid.data_prep.records import DatasetError
from dmnreid.experiments import tables
from dmnreid.experiments.ablation import SeedRun
from dmnreid.experiments.settings import add_common, configured, progress_printer, run_config
from dmnreid.experiments.settings import seeds as parse_seeds
from dmnreid.experiments.store import Store

CLUSTER_COLUMNS = ("clusters", "true_ids", "precision", "recall", "nmi")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common(parser, "experiments/alpha-sweep")
    parser.add_argument("--alphas", default="0,1,2,3",
                        help="comma-separated alpha values (default 0,1,2,3)")


def alpha_row(seed_run: SeedRun, alpha: int) -> dict:
    """One alpha of one seed, from the store when it finished before."""
    done = seed_run.finished(f"alpha-{alpha}")
    if done is not None:
        seed_run.say(f"alpha {alpha}: done before (mAP {done['mAP']:.1f})")
        return done
    seed_run.say(f"alpha {alpha}: clustering and incremental walk")
    network, walked, extra = seed_run.incremental("clusters", alpha=alpha)
    first = extra["clusterings"][0]
    if "true_ids" not in first:
        raise DatasetError(f"{network.partitions} holds no true identities of the training "
                         "tracklets (train_identities.csv): the sweep scores clusters against "
                         "them")
    result = {"alpha": alpha, "seed": seed_run.cfg.seed, "bn-mode": seed_run.cfg.bn_mode,
              **{k: first[k] for k in CLUSTER_COLUMNS}, **network.score(walked.state)}
    seed_run.say(f"alpha {alpha}: {result['clusters']} clusters ({result['true_ids']} true "
                 f"ids), precision {result['precision']:.3f}, mAP {result['mAP']:.1f}")
    return seed_run.save(result, f"alpha-{alpha}")


def plot(summary: pd.DataFrame, path) -> None:
    fig = Figure(figsize=(8, 3.2))
    left, right = fig.subplots(1, 2)
    left.errorbar(summary["alpha"], summary["clusters"], yerr=summary["clusters_std"],
                  marker="o", capsize=3, label="clusters")
    left.plot(summary["alpha"], summary["true_ids"], "k--", label="true identities")
    left.set_xlabel("alpha")
    left.set_ylabel("clusters")
    left.legend(fontsize="small")
    right.errorbar(summary["alpha"], summary["mAP"], yerr=summary["mAP_std"], marker="o",
                   capsize=3)
    right.set_xlabel("alpha")
    right.set_ylabel("mAP after the incremental walk")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def run(args: argparse.Namespace) -> int:
    base = run_config(args.run_config, eval_mode="server")
    try:
        alphas = [int(a) for a in args.alphas.split(",") if a.strip()]
    except ValueError as err:
        raise ConfigError(f"--alphas {args.alphas!r}: expected comma-separated integers") \
            from err
    store, printer = Store(args.out / "runs"), progress_printer("alpha-sweep")
    results = []
    for seed in parse_seeds(args.seeds):
        seed_run = SeedRun(configured(base, seed=seed), store, printer(f"seed={seed}"))
        results += [alpha_row(seed_run, alpha) for alpha in alphas]
    frame = pd.DataFrame(results)
    metrics = (*CLUSTER_COLUMNS, *tables.SCORES)
    summary = tables.summarise(frame, ["alpha"], metrics)
    args.out.mkdir(parents=True, exist_ok=True)
    frame.to_csv(args.out / "alpha_runs.csv", index=False)
    text = tables.write(summary, args.out, "alpha", metrics=metrics, title="alpha sweep",
                        notes=f"bn-mode {base.bn_mode}, {tables.made_with(frame)}; "
                              "precision and recall are pairwise, "
                              "against the true identities of the training tracklets.")
    plot(summary, args.out / "alpha.png")
    print(text)
    return 0
