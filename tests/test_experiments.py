"""``python -m dmnreid.experiments`` on a tiny network: files, columns, labels, resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from dmnreid.config import ConfigError
from dmnreid.data_prep.records import DatasetError
from dmnreid.experiments import driver, tables
from dmnreid.experiments.ablation import ROWS
from dmnreid.experiments.cli import main
from dmnreid.experiments.driver import Network, correct_merges
from dmnreid.experiments.settings import parse_overrides, run_config
from dmnreid.strategies import clustering
from tests.conftest import EXPERIMENT, EXPERIMENT_CONFIG


@pytest.fixture(autouse=True)
def _own_cache(experiment_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DMNREID_CACHE", str(experiment_cache))


def test_run_config_takes_flower_syntax_and_refuses_unknown_keys(tmp_path: Path):
    assert parse_overrides(['alpha=2 dataset=market1501 arch="resnet50"', "seed=4"]) == {
        "alpha": 2, "dataset": "market1501", "arch": "resnet50", "seed": 4}
    file = tmp_path / "settings.toml"
    file.write_text('walk-hops = 3\nbn-mode = "shared"\n')
    cfg = run_config([str(file)], eval_mode="server")
    assert (cfg.walk_hops, cfg.bn_mode, cfg.eval_mode) == (3, "shared", "server")
    with pytest.raises(ConfigError, match="unknown run-config key"):
        run_config(["walk_hops=3"])
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_overrides(["alpha"])
    with pytest.raises(ConfigError, match="no such file"):
        parse_overrides([str(tmp_path / "absent.toml")])


def _states_equal(a: dict, b: dict) -> bool:
    return list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_only_the_oracle_reads_the_true_identities(monkeypatch: pytest.MonkeyPatch):
    """The clusters and the control walk do not change when the true identities are
    unreadable; the oracle's classes are exactly the true identities, and without them it
    stops with an error naming the file."""
    network = Network(run_config([EXPERIMENT_CONFIG, "style-transfer=false"]))
    start = network.initial_state()
    with_truth = {s: network.with_config(incremental_labels=s).incremental(start)[0].state
                  for s in ("clusters", "local")}

    oracle = network.truth()
    table = pd.read_csv(network.partitions / "evaluator" / "train_identities.csv")
    for camera, rows in table.groupby("camera"):
        classes = oracle.classes[int(camera)][rows["label"].to_numpy()]
        pids = rows["pid"].to_numpy()
        assert all(len(set(pids[classes == c])) == 1 for c in set(classes))  # one pid each
    assert oracle.num_classes == table["pid"].nunique()

    monkeypatch.setattr(driver, "ground_truth", lambda *_: None)
    monkeypatch.setattr(clustering, "ground_truth", lambda *_: None)  # the oracle's reader
    for source, state in with_truth.items():
        assert _states_equal(network.with_config(incremental_labels=source).incremental(
            start)[0].state, state), source
    with pytest.raises(DatasetError, match=r"train_identities\.csv"):
        network.with_config(incremental_labels="oracle").incremental(start)
    with pytest.raises(DatasetError, match=r"train_identities\.csv.*wrong merges"):
        network.with_config(incremental_labels="clusters").with_correct_merges_only() \
            .incremental(start)


def test_undoing_wrong_merges_splits_each_cluster_into_its_correct_parts():
    """Memories 0-1-2-3 form one cluster through the edges 0-1, 1-2, 2-3 where 1-2 joins two
    identities; 4-5 is right. Dropping 1-2 leaves {0, 1}, {2, 3}, {4, 5} and the singleton 6,
    each named by its smallest memory."""
    edges = np.array([[0, 1], [1, 2], [2, 3], [4, 5]])
    truth = np.array([7, 7, 8, 8, 9, 9, 7])
    assert correct_merges(edges, truth).tolist() == [0, 0, 2, 2, 4, 4, 6]
    assert correct_merges(np.empty((0, 2), np.int64), truth).tolist() == list(range(7))


def test_triangle_relation_beats_plain_mutual_top1_precision():
    """On the synthetic data with meaningful features (a small stand-in pretraining), the
    clusters the distributed protocol finds at alpha 1 are purer than plain mutual top-1's.
    The driver runs the nodes' code and the protocol a Flower run uses (the Flower test
    ``test_the_in_process_driver_scores_what_the_flower_run_scored`` shows the two agree)."""
    network = Network(run_config([
        "synthetic-cameras=4 synthetic-train-ids=40 synthetic-test-ids=10 source-ids=80",
        "source-epochs=4 alpha=1 style-transfer=false"]))
    summary = network.clusters(network.initial_state()).summary
    assert 0 < summary["edges_kept"] < summary["edges_mutual"]  # the filter removed edges
    assert summary["pairs_predicted"] > 0  # not the empty-clustering convention
    assert summary["precision"] > summary["mutual_top1_precision"]


def test_ablation_writes_its_tables_and_continues_after_an_interruption(tmp_path: Path):
    out = tmp_path / "ablation"
    common = ["ablation", "--run-config", EXPERIMENT_CONFIG, "--seeds", "0", "--bn-modes", "camera",
              "--out", str(out)]
    assert main([*common, "--rows", "baseline,rw"]) == 0  # "interrupted" after two rows
    finished = {row: (out / "runs" / "camera" / "seed-0" / row / "result.json").stat().st_mtime
                for row in ("baseline", "rw")}
    assert main(common) == 0
    for row, mtime in finished.items():  # not redone
        assert (out / "runs" / "camera" / "seed-0" / row / "result.json").stat().st_mtime == mtime

    runs = pd.read_csv(out / "ablation_runs.csv")
    assert list(runs["row"]) == list(ROWS)
    assert {"rank1", "rank5", "rank10", "mAP", "labels", "seed", "bn-mode"} <= set(runs)
    assert dict(zip(runs["row"], runs["labels"], strict=True)) == {
        "baseline": "none", "rw": "local", "rw+t": "local", "rw+t+i": "clusters",
        "control": "local", "oracle": "truth", "upper-bound": "truth", "proto": "clusters",
        "oracle-proto": "truth", "proto-correct": "clusters+truth"}
    summary = pd.read_csv(out / "ablation.csv")
    assert {"row", "bn-mode", "mAP", "mAP_std", "seeds"} <= set(summary)
    assert "paper-mAP" not in summary  # synthetic data: the paper has no figures for it
    assert "| rw+t+i |" in (out / "ablation.md").read_text().replace("| camera ", "")
    assert (out / "ablation.png").stat().st_size > 0

    results = {row: json.loads((out / "runs" / "camera" / "seed-0" / row / "result.json")
                               .read_text()) for row in ROWS}
    # the incremental rows train as many hops on top of rw+t; the upper bound sees as many
    # images as rw+t+i (whole epochs over all cameras' images)
    for row in ("rw+t+i", "control", "oracle", "proto", "oracle-proto"):
        assert results[row]["images"] > results["rw+t"]["images"]
    for row in ("control", "proto"):
        assert results[row]["images"] == results["rw+t+i"]["images"]
    # the prototype rows train on the same clusters (or identities) with another loss
    assert results["proto"]["clusterings"] == results["rw+t+i"]["clusterings"]
    assert results["proto"]["mAP"] != results["rw+t+i"]["mAP"]
    assert results["oracle-proto"]["clusterings"] == results["oracle"]["clusterings"]
    # the same clusters with their wrong merges undone: pure, as many correct pairs at most
    clusters, correct = results["proto"]["clusterings"][0], \
        results["proto-correct"]["clusterings"][0]
    assert clusters["precision"] < 1.0 == correct["precision"]
    assert correct["wrong_merges_undone"] and "wrong_merges_undone" not in clusters
    assert correct["pairs_predicted"] == correct["pairs_correct"] <= clusters["pairs_correct"]
    assert correct["clusters"] > clusters["clusters"]
    assert results["proto-correct"]["mAP"] != results["proto"]["mAP"]
    # the memory travels both ways on every incremental hop: its bytes are in train-MB
    entries = results["proto"]["clusterings"][0]["clusters"]  # at least one entry each
    assert results["proto"]["memory-KB"] >= entries * 512 * 2 / 1e3  # float16 vectors
    assert results["rw+t+i"]["memory-KB"] == 0
    assert results["proto"]["train-MB"] - results["rw+t+i"]["train-MB"] == pytest.approx(
        2 * EXPERIMENT["incremental-hops"] * results["proto"]["memory-KB"] / 1e3)
    upper = results["upper-bound"]
    assert upper["budget"] == results["rw+t+i"]["images"]
    assert abs(upper["images"] - upper["budget"]) <= upper["images"] / upper["epochs"]
    assert results["rw+t+i"]["clusterings"][0]["clusters"] > 0
    assert results["oracle"]["clusterings"][0]["clusters"] == EXPERIMENT["synthetic-train-ids"]


def test_alpha_sweep_and_unification_tables(tmp_path: Path, unification_out: Path):
    common = ["--run-config", EXPERIMENT_CONFIG, "--seeds", "0"]
    out = tmp_path / "sweep"
    assert main(["alpha-sweep", *common, "--alphas", "0,1", "--out", str(out)]) == 0
    sweep = pd.read_csv(out / "alpha.csv")
    assert list(sweep["alpha"]) == [0, 1]
    assert {"clusters", "true_ids", "precision", "recall", "nmi", "mAP"} <= set(sweep)
    assert (sweep["clusters"] >= 1).all() and sweep["nmi"].between(0, 1).all()
    assert (out / "alpha.png").stat().st_size > 0

    out = unification_out
    rows = pd.read_csv(out / "unification_runs.csv")
    picks = rows[rows["strategy"] == "pick-one"]
    assert len(picks) == picks["camera"].nunique() >= 2  # every visited camera's copy
    assert picks["seeded-pick"].sum() == 1 and (rows["strategy"] == "average").sum() == 1
    summary = pd.read_csv(out / "unification.csv")
    pick = summary[summary["strategy"] == "pick-one"].iloc[0]
    assert pick["mAP-worst"] <= pick["mAP"] <= pick["mAP-best"]
    assert np.isclose(pick["mAP"], picks["mAP"].mean())
    assert (out / "unification.png").stat().st_size > 0


def test_a_bad_option_names_the_problem(capsys: pytest.CaptureFixture):
    with pytest.raises(SystemExit):
        main(["ablation", "--bogus"])
    assert "--bogus" in capsys.readouterr().err
    assert main(["ablation", "--rows", "rw,everything"]) == 2
    assert "error: --rows 'rw,everything': expected some of" in capsys.readouterr().err


def test_ablation_compares_the_walk_with_fedavg_and_with_two_walkers(tmp_path: Path):
    """--walk-strategies random-walk,fedavg --walkers 1,2: the rows that walk also run with
    FedAvg (every camera each round) and with two walkers, in their own folders;
    strategies.csv and walkers.csv compare them with costs."""
    out = tmp_path / "strategies"
    assert main(["ablation", "--run-config", EXPERIMENT_CONFIG, "--seeds", "0", "--bn-modes",
                 "camera", "--rows", "baseline,rw", "--walk-strategies", "random-walk,fedavg",
                 "--walkers", "1,2", "--out", str(out)]) == 0
    seed = out / "runs" / "camera" / "seed-0"
    assert (seed / "fedavg" / "rw" / "result.json").is_file()
    assert (seed / "walkers-2" / "rw" / "result.json").is_file()
    assert not (seed / "fedavg" / "baseline").exists()  # the same for all: run once
    assert not (seed / "walkers-2" / "baseline").exists()
    runs = pd.read_csv(out / "ablation_runs.csv")
    assert sorted(zip(runs["row"], runs["walk-strategy"], runs["walkers"], strict=True)) == [
        ("baseline", "random-walk", 1), ("rw", "fedavg", 1), ("rw", "random-walk", 1),
        ("rw", "random-walk", 2)]
    walkers = pd.read_csv(out / "walkers.csv").set_index("strategy")
    assert list(walkers.index) == ["walkers = 1", "walkers = 2", "fedavg"]
    # the same 2 hops (on the same 2 cameras) in one step: the same bytes and nearly the
    # same images (each hop's images depend on its camera only)
    one, two = walkers.loc["walkers = 1"], walkers.loc["walkers = 2"]
    assert two["train-MB"] == pytest.approx(one["train-MB"])
    assert two["images"] == pytest.approx(one["images"])
    assert (out / "walkers.png").stat().st_size > 0
    table = pd.read_csv(out / "strategies.csv").set_index("walk-strategy")
    assert list(table["row"]) == ["rw", "rw"]
    walk, fedavg = table.loc["random-walk"], table.loc["fedavg"]
    # 2 walk hops over 3 cameras: the walk trains 2 nodes; FedAvg 1 round of all 3
    assert fedavg["train-MB"] == pytest.approx(1.5 * walk["train-MB"])
    assert walk["seconds"] > 0 and fedavg["deployed-seconds"] > 0
    assert (table["seeds-timed"] == 1).all()
    assert (out / "strategies.png").stat().st_size > 0
    assert "rw" in (out / "ablation.md").read_text()  # the main table: the random walk's
    assert "fedavg" not in (out / "ablation.md").read_text()


def test_a_table_refuses_to_average_two_stand_ins():
    rows = pd.DataFrame({"bn-mode": ["camera"] * 3, "row": ["rw"] * 3, "seed": [0, 1, 2],
                         "mAP": [40.0, 41.0, 47.0], "source-seed": [0, 0, 0],
                         "stand-in-sha256": ["a" * 64, "a" * 64, "b" * 64]})
    with pytest.raises(ConfigError, match=r"aaaaaaaaaaaa \(.*seed 0\) and bbbbbbbbbbbb \("):
        tables.summarise(rows, ["bn-mode", "row"])
    older = rows.drop(columns="stand-in-sha256").iloc[:1]  # a row from before the records
    with pytest.raises(ConfigError, match="unrecorded"):
        tables.summarise(pd.concat([older, rows.iloc[1:2]]), ["bn-mode", "row"])
    # two stand-ins on purpose (--stand-in-seeds): one sha per source-seed, averaged
    summary = tables.summarise(rows.assign(**{"source-seed": [0, 0, 1]}), ["bn-mode", "row"],
                               ("mAP",))
    assert summary["stand-ins"].tolist() == [2] and summary["seeds"].tolist() == [3]


def test_ablation_over_stand_in_seeds_records_each_and_refuses_a_foreign_row(
        tmp_path: Path, capsys: pytest.CaptureFixture):
    out = tmp_path / "ablation"
    command = ["ablation", "--run-config", EXPERIMENT_CONFIG, "--run-config",
               "pretrained-weights='synthetic-source' source-ids=6 source-epochs=1",
               "--seeds", "0,1", "--bn-modes", "camera", "--rows", "baseline,rw",
               "--stand-in-seeds", "0,1", "--out", str(out)]
    assert main(command) == 0
    runs = pd.read_csv(out / "ablation_runs.csv")
    assert len(runs) == 8 and set(runs["source-seed"]) == {0, 1}
    assert runs.groupby("source-seed")["stand-in-sha256"].nunique().tolist() == [1, 1]
    assert runs["stand-in-sha256"].nunique() == 2 and runs["stand-in-sha256"].str.len().eq(
        64).all()
    assert set(runs["cpu-capability"]) == {torch.backends.cpu.get_cpu_capability()}
    assert set(runs["torch"]) == {torch.__version__}
    summary = pd.read_csv(out / "ablation.csv")
    assert summary["stand-ins"].tolist() == [2, 2] and summary["seeds"].tolist() == [4, 4]
    assert (out / "ablation_stand_ins.md").is_file()
    # the baseline differs by stand-in only: each stand-in's two seeds agree
    baseline = runs[runs["row"] == "baseline"].groupby("source-seed")["mAP"]
    assert baseline.nunique().tolist() == [1, 1] and baseline.first().nunique() == 2

    # a finished row made from another stand-in is refused, not averaged in
    folder = out / "runs" / "camera" / "seed-1" / "stand-in-1" / "rw"
    result = json.loads((folder / "result.json").read_text())
    theirs = result["stand-in-sha256"]
    result["stand-in-sha256"] = "f" * 64
    (folder / "result.json").write_text(json.dumps(result))
    capsys.readouterr()
    assert main(command) == 2
    error = capsys.readouterr().err
    assert "ffffffffffff" in error and theirs[:12] in error and str(folder) in error
