"""The stand-in is the same bits whatever the machine's kernel paths; runs record it.

The pretraining runs in a pinned process (``dmnreid.reid.kernels``). These tests start it, as
subprocesses, from callers that force other CPU kernel paths (ATen's capability, oneDNN's and
MKL's instruction sets, one thread on one CPU), and compare the weights bit for bit; the same
callers without the pinning give other weights, so the comparison can fail.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dmnreid.config import ConfigError, RunConfig
from dmnreid.provenance import run_provenance
from dmnreid.reid import kernels
from dmnreid.reid.model import weights_digest
from dmnreid.reid.pretrain import ensure_source_weights, stand_in_record, tensors_sha256
from dmnreid.run_dir import RunDir
from dmnreid.server_app import with_provenance

SMALL = RunConfig(image_height=32, image_width=16, source_ids=12, source_epochs=1,
                  synthetic_cameras=3)
# the caller environments: as far apart as one machine allows
PLAIN = {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41",
         "MKL_ENABLE_INSTRUCTIONS": "SSE4_2", "MKL_CBWR": "AVX512", "OMP_NUM_THREADS": "1",
         "ONEDNN_VERBOSE": "1"}
WIDEST = {"ATEN_CPU_CAPABILITY": "avx512" if torch.cpu._is_avx512_supported() else "avx2"}


def pretrain(out: Path, caller: dict[str, str], pinned: bool, one_cpu: bool = False) -> str:
    """The stand-in pretrained by ``python -m dmnreid.reid.pretrain`` started from a caller
    with ``caller`` in its environment (pinned as ``ensure_source_weights`` starts it, or
    not); returns its output."""
    env = {**os.environ, **caller}
    if pinned:
        env = kernels.pinned_environment(env)
    cpu = sorted(os.sched_getaffinity(0))[:1]
    done = subprocess.run(
        [sys.executable, "-m", "dmnreid.reid.pretrain", "--run-config",
         json.dumps(SMALL.to_mapping()), "--out", str(out)] + ([] if pinned else ["--unpinned"]),
        env=env, capture_output=True, text=True, timeout=600,
        preexec_fn=(lambda: os.sched_setaffinity(0, cpu)) if one_cpu else None)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done.stdout + done.stderr


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)


def test_the_stand_in_is_the_same_bits_under_other_cpu_kernel_paths(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("DMNREID_CACHE", str(tmp_path / "cache"))
    output = pretrain(tmp_path / "plain" / "w.pt", PLAIN, pinned=True, one_cpu=True)
    pretrain(tmp_path / "widest" / "w.pt", WIDEST, pinned=True)
    plain, widest = weights(tmp_path / "plain" / "w.pt"), weights(tmp_path / "widest" / "w.pt")
    assert list(plain) == list(widest)
    assert all(torch.equal(plain[k], widest[k]) for k in plain)
    assert "primitive,exec" not in output  # not one oneDNN kernel ran (ONEDNN_VERBOSE=1)
    records = [stand_in_record(tmp_path / name / "w.pt") for name in ("plain", "widest")]
    assert records[0]["sha256"] == records[1]["sha256"] == tensors_sha256(plain)
    assert records[0]["kernels"] == records[1]["kernels"]
    assert records[0]["kernels"]["pinned"] and not records[0]["kernels"]["onednn"]
    assert records[0]["kernels"]["cpu-capability"] == kernels.pinned_capability().upper()
    assert records[0]["kernels"]["threads"] == kernels.THREADS

    # the same callers without the pinning: their kernel paths give other weights
    pretrain(tmp_path / "plain-unpinned" / "w.pt", PLAIN, pinned=False)
    pretrain(tmp_path / "widest-unpinned" / "w.pt", WIDEST, pinned=False)
    unpinned = [tensors_sha256(weights(tmp_path / n / "w.pt"))
                for n in ("plain-unpinned", "widest-unpinned")]
    assert unpinned[0] != unpinned[1]


def test_ensure_source_weights_pretrains_pinned_once_and_records_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("DMNREID_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "default")  # the caller's: not the stand-in's
    path = ensure_source_weights(SMALL)
    assert "pinned" in path.name and f"s{SMALL.source_seed}" in path.name
    record = stand_in_record(path)
    assert record["sha256"] == tensors_sha256(weights(path))
    assert len(record["epochs-sha256"]) == SMALL.source_epochs
    assert record["epochs-sha256"][-1] == record["sha256"]
    assert record["kernels"]["pinned"]
    stamp = path.stat().st_mtime_ns
    assert ensure_source_weights(SMALL) == path and path.stat().st_mtime_ns == stamp
    other = ensure_source_weights(RunConfig(**{**SMALL.__dict__, "source_seed": 1}))
    assert other != path and stand_in_record(other)["sha256"] != record["sha256"]


def test_pretraining_pinned_in_an_unpinned_process_is_refused(tmp_path: Path):
    from dmnreid.reid.pretrain import pretrain_source

    with pytest.raises(RuntimeError, match="not started pinned"):
        pretrain_source(SMALL, tmp_path / "w.pt")


def test_a_resumed_run_refuses_other_pretrained_weights(tmp_path: Path):
    """A run records what it computed from; continued from other weights (a stand-in
    pretrained elsewhere, another file) it stops before anything is written, naming both."""
    first, second = tmp_path / "a.pt", tmp_path / "b.pt"
    torch.save({"w": torch.zeros(2)}, first)
    torch.save({"w": torch.ones(2)}, second)
    run = RunDir.create(tmp_path / "outputs", "r")
    run.write_json("config.json", RunConfig().to_mapping())
    cfg = RunConfig(pretrained_weights=str(first))
    record = run_provenance(cfg, first, weights_digest(first))
    run.write_metrics(with_provenance(cfg, record))
    resumed = RunConfig(pretrained_weights=str(second), resume_from=str(run.path))
    before = (run.path / "metrics.json").read_text()
    with pytest.raises(ConfigError, match=weights_digest(first)[:12]) as err:
        with_provenance(resumed, run_provenance(resumed, second, weights_digest(second)))
    assert weights_digest(second)[:12] in str(err.value)
    assert (run.path / "metrics.json").read_text() == before
    again = with_provenance(RunConfig(pretrained_weights=str(first), resume_from=str(run.path)),
                            record)
    assert again["provenance"]["weights-sha256"] == record["weights-sha256"]
    assert len(again["provenance"]["resumed"]) == 1
