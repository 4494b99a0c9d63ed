"""``ablation``: the paper's Table 1 (baseline, rw, rw+t, rw+t+i) for shared and camera BN,
over seeds, with three rows that show where the headroom is.

- ``control``: rw+t walked on for as many hops as the incremental walk, local labels (the
  same training, no clusters);
- ``oracle``: the incremental walk with the true identities in place of the clusters (the
  best any clustering could give this training);
- ``upper-bound``: supervised training of the same network on all cameras' images with true
  identities, as many images seen as rw+t+i (not federated: the limit of data and network);
- ``proto`` and ``oracle-proto``: the incremental walk with ``incremental-loss =
  "prototype"`` (a cluster memory that travels with the weights, issue 17) on the clusters,
  and on the true identities;
- ``proto-correct``: ``proto`` on the same clusters with their wrong merges undone by the
  true identities (precision 1, the clusters' recall or less): tells whether the clusters'
  wrong merges or their missing ones keep ``proto`` from ``oracle-proto``.

Only ``oracle``, ``oracle-proto``, ``proto-correct`` and ``upper-bound`` read true identities
for training;
every other row uses what a Flower run's nodes have (``labels`` in each result says which).

``--walk-strategies random-walk,fedavg`` also trains the rows that walk (rw, rw+t, rw+t+i,
control, oracle) with FedAvg over the cameras, and writes the comparison (``strategies``):
mAP, bytes of the training messages, wall time here and the training time a deployment
would take. ``--walkers 1,2,3`` trains the rows that walk with each number of walkers at once
(``walkers``), and writes the comparison with FedAvg where it runs too (``walkers``): mAP
against the training time a deployment would take.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from dmnreid.compute import device_name, resolve_device
from dmnreid.config import FROM_PASSES, ConfigError, RunConfig, defaults
from dmnreid.experiments import plots, tables
from dmnreid.experiments.driver import Network, Walked
from dmnreid.experiments.paper import paper_rows
from dmnreid.experiments.settings import (
    add_common,
    configured,
    progress_printer,
    run_config,
    seeds,
)
from dmnreid.experiments.stand_ins import check_reused
from dmnreid.experiments.store import Store
from dmnreid.experiments.upper_bound import train_upper_bound
from dmnreid.provenance import provenance

ROWS = ("baseline", "rw", "rw+t", "rw+t+i", "control", "oracle", "upper-bound", "proto",
        "oracle-proto", "proto-correct")
# the incremental rows' incremental-labels
INCREMENTAL = {"rw+t+i": "clusters", "control": "local", "oracle": "oracle",
               "proto": "clusters", "oracle-proto": "oracle"}
BN_MODES = ("shared", "camera")
# where each row's training labels come from (a results column)
LABELS = {"baseline": "none", "rw": "local", "rw+t": "local", "upper-bound": "truth",
          "proto-correct": "clusters+truth",
          **{row: "truth" if labels == "oracle" else labels
             for row, labels in INCREMENTAL.items()}}
STRATEGIES = ("random-walk", "fedavg")
WALKING_ROWS = ("rw", "rw+t", "rw+t+i", "control", "oracle")  # the rows a strategy changes
COMPARED = ("rw", "rw+t", "rw+t+i")
WALKER_COMPARED = ("rw", "rw+t+i")
COSTS = ("train-MB", "seconds", "deployed-seconds")
DEFAULTS = defaults()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common(parser, "experiments/ablation")
    parser.add_argument("--bn-modes", default=",".join(BN_MODES),
                        help="comma-separated bn-mode values (default shared,camera)")
    parser.add_argument("--rows", default=",".join(ROWS),
                        help=f"comma-separated rows to run (default all: {','.join(ROWS)})")
    parser.add_argument("--stand-in-seeds", default="",
                        help="comma-separated source-seed values: every seed's rows are made "
                             "from each of these stand-ins (pretrained once each), so that "
                             "the spread includes the stand-in's (default: the run config's "
                             "source-seed, 0)")
    parser.add_argument("--walk-strategies", default="random-walk",
                        help="comma-separated walk-strategy values (default random-walk); "
                             "with fedavg, the rows that walk are also trained with FedAvg "
                             "and compared (strategies.csv/md/png)")
    parser.add_argument("--walkers", default="1",
                        help="comma-separated walkers values (default 1, the paper's walk); "
                             "with several, the rows that walk are trained with each and "
                             "compared (walkers.csv/md/png, FedAvg beside them when "
                             "--walk-strategies has it)")


def _choices(text: str, allowed: tuple[str, ...], what: str) -> list[str]:
    values = [v.strip() for v in text.split(",") if v.strip()]
    unknown = sorted(set(values) - set(allowed))
    if unknown or not values:
        raise ConfigError(f"{what} {text!r}: expected some of {list(allowed)}")
    return values


class SeedRun:
    """The rows of one (bn-mode, seed): networks built when first needed, each row's result
    and the rw+t weights kept in the store, so nothing finished is redone."""

    def __init__(self, cfg: RunConfig, store: Store, say: Callable[[str], None]) -> None:
        self.cfg, self.store, self.say = cfg, store, say
        self.where: tuple[str, ...] = (cfg.bn_mode, f"seed-{cfg.seed}")
        if cfg.source_seed != DEFAULTS["source-seed"]:
            self.where += (f"stand-in-{cfg.source_seed}",)
        if cfg.walk_strategy != "random-walk":
            self.where += (cfg.walk_strategy,)
        if cfg.walkers != 1:
            self.where += (f"walkers-{cfg.walkers}",)
        self._network: Network | None = None
        self._nested = 0.0  # seconds spent in rows run from inside another row

    def network(self, style: bool, **changes: object) -> Network:
        """The network with or without style transfer (and other ``changes``)."""
        if self._network is None:
            self._network = Network(self.cfg, self.say)
        return self._network.with_config(style_transfer=style, **changes)

    def finished(self, *parts: str) -> dict | None:
        """The result saved under ``where/parts``, or None; refused when it was made with
        another stand-in than this machine's for these settings (where that is known)."""
        done = self.store.result(*self.where, *parts)
        if done is not None:
            check_reused(done, self.store.root.joinpath(*self.where, *parts), self.cfg)
        return done

    def save(self, result: dict, *parts: str) -> dict:
        """``result`` with what it was computed from (``provenance``), saved."""
        return self.store.save_result(
            {**result, **provenance(self.cfg, self.network(False).weights)},
            *self.where, *parts)

    def row(self, name: str) -> dict:
        done = self.finished(name)
        if done is not None:
            self.say(f"{name}: done before (mAP {done['mAP']:.1f})")
            return {"walk-strategy": "random-walk", "walkers": 1, **done}  # from before those
        self.say(f"{name}: starting")
        before, start = self._nested, time.perf_counter()
        scores, extra = getattr(self, "_" + name.replace("+", "_").replace("-", "_"))()
        elapsed = time.perf_counter() - start
        own = elapsed - (self._nested - before)  # rows it had to run first are theirs
        self._nested = before + elapsed
        own += extra.pop("seconds-before", 0.0)
        result = {"row": name, "bn-mode": self.cfg.bn_mode, "seed": self.cfg.seed,
                  "walk-strategy": self.cfg.walk_strategy, "walkers": self.cfg.walkers,
                  "labels": LABELS[name], **scores, **extra,
                  "seconds": own, "device": device_name(resolve_device(self.cfg.device))}
        self.say(f"{name}: mAP {result['mAP']:.1f}, rank-1 {result['rank1']:.1f}")
        return self.save(result, name)

    def _baseline(self) -> tuple[dict, dict]:
        network = self.network(False)
        return network.score(network.initial_state()), {}

    @staticmethod
    def costs(network: Network, walked: Walked) -> dict:
        """Images seen, bytes of the training messages (weights, and a prototype memory,
        out and back, per node trained), the memory's KB per hop, and the training time a
        deployment would take."""
        memory = [h.get("memory-bytes", 0) for h in walked.hops]
        return {"images": walked.images, "deployed-seconds": walked.deployed_seconds(),
                "train-MB": 2 * (len(walked.hops) * network.wire_bytes(walked.state)
                                 + sum(memory)) / 1e6,
                "memory-KB": max(memory, default=0) / 1e3}

    def _rw(self) -> tuple[dict, dict]:
        network = self.network(False)
        walked = network.first_walk(network.initial_state())
        return network.score(walked.state), self.costs(network, walked)

    def _rw_t(self) -> tuple[dict, dict]:
        network = self.network(True)
        style = network.style(self.store.folder(*self.where, "rw+t") / "style_grid.png")
        walked = network.first_walk(network.initial_state())
        self.store.save_state(walked.state, *self.where, "rw+t")
        return network.score(walked.state), {**self.costs(network, walked), "style": style}

    def walked_with_style(self) -> tuple[dict, dict]:
        """rw+t's result and weights (run now if its folder has none)."""
        state = self.store.state(*self.where, "rw+t")
        result = self.finished("rw+t")
        if state is None or result is None:
            self.store.root.joinpath(*self.where, "rw+t", "result.json").unlink(missing_ok=True)
            result = self.row("rw+t")
            state = self.store.state(*self.where, "rw+t")
        return result, state

    def incremental(self, labels: str, correct_merges_only: bool = False,
                    **changes: object) -> tuple[Network, Walked, dict]:
        """The incremental walk from rw+t's weights on ``incremental-labels = labels`` (the
        clusters' wrong merges undone with ``correct_merges_only``); the network it ran on,
        the walk, and the fields every incremental result holds."""
        start, state = self.walked_with_style()
        network = self.network(True, incremental_labels=labels, **changes)
        if correct_merges_only:
            network = network.with_correct_merges_only()
        walked, clusterings = network.incremental(state)
        costs = {key: start.get(key, float("nan")) + value  # rw+t's part, then this walk's
                 for key, value in self.costs(network, walked).items()}
        return network, walked, {**costs, "clusterings": clusterings,
                                 "seconds-before": start.get("seconds", float("nan"))}

    def _incremental(self, labels: str, correct_merges_only: bool = False,
                     **changes: object) -> tuple[dict, dict]:
        network, walked, extra = self.incremental(labels, correct_merges_only, **changes)
        return network.score(walked.state), extra

    def _rw_t_i(self) -> tuple[dict, dict]:
        return self._incremental("clusters")

    def _control(self) -> tuple[dict, dict]:
        return self._incremental("local")

    def _oracle(self) -> tuple[dict, dict]:
        return self._incremental("oracle")

    def _proto(self) -> tuple[dict, dict]:
        return self._incremental("clusters", incremental_loss="prototype")

    def _oracle_proto(self) -> tuple[dict, dict]:
        return self._incremental("oracle", incremental_loss="prototype")

    def _proto_correct(self) -> tuple[dict, dict]:
        return self._incremental("clusters", True, incremental_loss="prototype")

    def _upper_bound(self) -> tuple[dict, dict]:
        incremental = self.row("rw+t+i")
        network = self.network(False)
        state, info = train_upper_bound(network, incremental["images"])
        return network.score(state), info


def results_frame(results: list[dict]) -> pd.DataFrame:
    """The rows in the order of ``--bn-modes`` and of the paper's table."""
    frame = pd.DataFrame(results)
    frame["bn-mode"] = pd.Categorical(frame["bn-mode"], list(dict.fromkeys(frame["bn-mode"])))
    frame["row"] = pd.Categorical(frame["row"], [r for r in ROWS if r in set(frame["row"])])
    return frame.sort_values(["bn-mode", "row", "seed"], kind="stable")


def run(args: argparse.Namespace) -> int:
    base = run_config(args.run_config, eval_mode="server")
    bn_modes = _choices(args.bn_modes, BN_MODES, "--bn-modes")
    rows = _choices(args.rows, ROWS, "--rows")
    strategies = _choices(args.walk_strategies, STRATEGIES, "--walk-strategies")
    walkers = seeds(args.walkers, "--walkers")
    if 0 in walkers:
        raise ConfigError(f"--walkers {args.walkers!r}: at least one walker")
    store, printer = Store(args.out / "runs"), progress_printer("ablation")
    args.out.mkdir(parents=True, exist_ok=True)
    stand_ins = seeds(args.stand_in_seeds, "--stand-in-seeds") if args.stand_in_seeds \
        else [base.source_seed]
    results = []
    for bn_mode in bn_modes:
        for stand_in in stand_ins:
            for seed in seeds(args.seeds):
                for strategy, k in [(s, k) for s in strategies
                                    for k in (walkers if s == "random-walk" else [1])]:
                    cfg = configured(base, bn_mode=bn_mode, seed=seed, walk_strategy=strategy,
                                     source_seed=stand_in, walkers=k)
                    seed_run = SeedRun(cfg, store, printer(
                        f"bn={bn_mode} seed={seed}"
                        + (f" stand-in={stand_in}" if len(stand_ins) > 1 else "")
                        + ("" if strategy == "random-walk" else f" {strategy}")
                        + ("" if k == 1 else f" walkers={k}")))
                    results += [seed_run.row(row) for row in rows
                                if (strategy == "random-walk" and k == 1)
                                or row in WALKING_ROWS]
    frame = results_frame(results)
    frame.drop(columns=[c for c in ("style", "clusterings") if c in frame]).to_csv(
        args.out / "ablation_runs.csv", index=False)
    if len(walkers) > 1:
        print(compare_walkers(frame, base, args.out))
    frame = frame[frame["walkers"] == walkers[0]]
    if len(strategies) > 1:
        print(compare_strategies(frame, base, args.out))
    frame = frame[frame["walk-strategy"] == strategies[0]]
    summary = tables.summarise(frame, ["bn-mode", "row"])
    summary[["bn-mode", "row"]] = summary[["bn-mode", "row"]].astype(str)
    paper = paper_rows(base.dataset)
    if paper is not None:
        summary = summary.merge(paper, on="row", how="left")
    text = tables.write(summary, args.out, "ablation", title="Ablation (paper Table 1)",
                        notes=_notes(base, frame))
    if len(stand_ins) > 1:
        text += "\n" + by_stand_in(frame, args.out)
    plots.grouped_bars(summary, "row", "bn-mode", "mAP", args.out / "ablation.png",
                       "mAP by stage (mean ± std over seeds)")
    print(text)
    return 0


def by_stand_in(frame: pd.DataFrame, out: Path) -> str:
    """``ablation_stand_ins.csv/md``: each row for each stand-in, mean ± std over seeds,
    beside the spread of the stand-ins' means (the part of the spread the stand-in adds)."""
    per = frame.assign(row=frame["row"].astype(str), **{"bn-mode": frame["bn-mode"].astype(str)})
    summary = tables.summarise(per, ["bn-mode", "row", "source-seed"])
    means = summary.groupby(["bn-mode", "row"], sort=False)["mAP"]
    summary["mAP-spread-of-stand-ins"] = means.transform(lambda v: v.std(ddof=1))
    return tables.write(summary, out, "ablation_stand_ins",
                        title="Ablation by stand-in (source-seed)", notes=(
        "Each stand-in's rows, mean ± std over seeds; mAP-spread-of-stand-ins: the standard "
        "deviation of the stand-ins' mean mAP for that bn-mode and row."))


def compare_strategies(frame: pd.DataFrame, cfg: RunConfig, out: Path) -> str:
    """``strategies.csv/md/png``: each walk-strategy's rw, rw+t and rw+t+i, mean ± std over
    seeds, with their costs."""
    compared = frame[frame["row"].isin(COMPARED)].copy()
    for column in COSTS:
        compared[column] = compared.get(column, float("nan"))
    compared["row"] = compared["row"].astype(str)
    summary = tables.summarise(compared, ["bn-mode", "row", "walk-strategy"],
                               ("rank1", "mAP", *COSTS))
    summary["bn-mode"] = summary["bn-mode"].astype(str)
    summary["seeds-timed"] = compared.groupby(["bn-mode", "row", "walk-strategy"], sort=False,
                                              observed=True)["seconds"].count().to_numpy()
    plots.grouped_bars(summary.assign(stage=summary["bn-mode"] + " " + summary["row"]),
                       "stage", "walk-strategy", "mAP", out / "strategies.png",
                       "random walk vs FedAvg: mAP (mean ± std over seeds)")
    return tables.write(summary, out, "strategies", ("rank1", "mAP", *COSTS),
                        title="Random walk vs FedAvg", notes=(
        f"{tables.made_with(compared)}. {_phases(cfg)}; FedAvg runs round(hops / cameras) "
        "rounds of every camera, so both train about as many images. "
        "train-MB: the weights out and back for every node trained (clustering messages, the "
        "same for both, not counted); seconds: wall time in this process up to that stage "
        "(rw+t includes training the CycleGANs, rw+t+i includes rw+t); deployed-seconds: the "
        "training time a deployment would take (walk hops one after another, a FedAvg "
        "round's nodes at once; messages and evaluations not counted). seeds-timed: seeds "
        "whose costs were recorded (runs from before the costs were recorded have mAP only)."))


def compare_walkers(frame: pd.DataFrame, cfg: RunConfig, out: Path) -> str:
    """``walkers.csv/md/png``: rw and rw+t+i with each number of walkers (and FedAvg where
    it ran), mean ± std over seeds, with their costs; the plot puts each one's mAP against
    the training time a deployment would take."""
    compared = frame[frame["row"].isin(WALKER_COMPARED)].copy()
    for column in ("images", *COSTS):
        compared[column] = compared.get(column, float("nan"))
    compared["row"] = compared["row"].astype(str)
    compared["strategy"] = [f"walkers = {k}" if s == "random-walk" else s
                            for s, k in zip(compared["walk-strategy"], compared["walkers"],
                                            strict=True)]
    by = ["bn-mode", "row", "strategy"]
    summary = tables.summarise(compared, by, ("rank1", "mAP", "images", *COSTS))
    summary["bn-mode"] = summary["bn-mode"].astype(str)
    plots.trade_off(summary, "deployed-seconds", "mAP", "strategy", "row",
                    out / "walkers.png", "mAP against training time deployed "
                    "(mean ± std over seeds)")
    return tables.write(summary, out, "walkers", ("rank1", "mAP", "images", *COSTS),
                        title="Walkers at once", notes=(
        f"{tables.made_with(compared)}. {_phases(cfg)} on "
        f"{cfg.synthetic_cameras if cfg.dataset == 'synthetic' else 'the'} cameras, counted "
        "over all walkers (the same images and bytes for any number of walkers, in 1/K of "
        "the steps); FedAvg runs round(hops / cameras) rounds of every camera. walker-merge "
        f"= {cfg.walker_merge} (0: once per pass). train-MB: the weights out and back for "
        "every node trained; seconds: wall time in this process up to that stage (rw+t+i "
        "includes rw+t and its CycleGANs); deployed-seconds: the training time a deployment "
        "would take (a step as long as its slowest hop, steps one after another; messages "
        "and evaluations not counted)."))


def _phases(cfg: RunConfig) -> str:
    """The walk's and the incremental walk's length: hops on the synthetic network, whose
    cameras are known here, else as configured (hops, or passes over the cameras)."""
    if cfg.dataset == "synthetic":
        plan = configured(cfg, walk_strategy="random-walk").schedule(cfg.synthetic_cameras)
        return f"{plan.walk} walk hops + {plan.incremental} incremental hops"
    parts = []
    for key, passes, what in (("walk_hops", "walk_passes", "walk"),
                              ("incremental_hops", "incremental_passes", "incremental walk")):
        hops = getattr(cfg, key)
        parts.append(f"{getattr(cfg, passes)} passes of the {what}" if hops == FROM_PASSES
                     else f"{hops} hops of the {what}")
    return " + ".join(parts)


def _notes(cfg: RunConfig, frame: pd.DataFrame) -> str:
    return (f"Dataset {cfg.dataset}, {cfg.arch} at {cfg.image_height}x{cfg.image_width}, "
            f"{tables.made_with(frame)}, "
            f"{_phases(cfg)} of "
            f"{cfg.local_epochs} local epoch(s), seeds {sorted(set(frame['seed']))}. "
            "baseline: the pretrained weights (direct transfer); rw: random walk; +t: style "
            "transfer; +i: incremental walk on the clusters. control: rw+t walked on with "
            "local labels for the incremental hops; oracle: the incremental walk on the true "
            "identities; upper-bound: centralised supervised training on true identities "
            "with as many images seen as rw+t+i (not a federated method); proto and "
            "oracle-proto: the incremental walk against a travelling cluster-prototype "
            "memory (incremental-loss = prototype) on the clusters and on the true "
            "identities; proto-correct: proto on the clusters with their wrong merges undone "
            "by the true identities.")
