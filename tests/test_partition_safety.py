"""`partition` on bad input: never deletes what is not a partition, swaps atomically, never
reuses a damaged partition, cleans up after killed runs, and names the problem."""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dmnreid.data_prep import folder_swap
from dmnreid.data_prep.datasets import read_dataset
from dmnreid.data_prep.partition import MANIFEST, read_partition, write_partition
from dmnreid.data_prep.records import DatasetError, ReidDataset
from tests.test_cli import cli


@pytest.fixture()
def ds(synthetic_root: Path) -> ReidDataset:
    return read_dataset("synthetic", synthetic_root)


def snapshot(folder: Path) -> dict[str, int]:
    """Every file under ``folder`` with its size: equal snapshots mean nothing was touched."""
    return {p.relative_to(folder).as_posix(): p.stat().st_size
            for p in folder.rglob("*") if p.is_file()}


def hidden_siblings(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}."))


def dead_pid() -> int:
    """The id of a process that has ended (a real one, so not guessed)."""
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    return int(done.stdout)


def test_force_never_deletes_the_dataset(ds: ReidDataset, synthetic_root: Path,
                                         tmp_path: Path):
    before = snapshot(synthetic_root)
    for out, why in ((synthetic_root, "is the dataset folder"),
                     (synthetic_root / "parts", "lies inside the dataset folder"),
                     (synthetic_root.parent, "contains the dataset folder")):
        with pytest.raises(DatasetError, match=why):
            write_partition(ds, out, force=True, progress=False)
    link = tmp_path / "link"
    link.symlink_to(synthetic_root)
    with pytest.raises(DatasetError, match="is the dataset folder"):
        write_partition(ds, link, force=True, progress=False)
    assert snapshot(synthetic_root) == before


def test_force_replaces_only_a_partition(ds: ReidDataset, tmp_path: Path):
    out = tmp_path / "parts"
    write_partition(ds, out, progress=False)
    (out / "notes.txt").write_text("mine")
    before = snapshot(out)
    with pytest.raises(DatasetError, match=r"parts is not a partition.*notes\.txt"):
        write_partition(ds, out, target_camera=2, force=True, progress=False)
    assert snapshot(out) == before
    # node folders may hold run outputs; the top level only partition entries
    (out / "notes.txt").unlink()
    (out / "camera-01" / "cache").mkdir()
    (out / "camera-01" / "cache" / "bank.npy").write_bytes(b"x")
    assert write_partition(ds, out, progress=False)["target_camera"] == 1  # still reused
    assert write_partition(ds, out, target_camera=2, force=True,
                           progress=False)["target_camera"] == 2
    other = tmp_path / "photos"
    other.mkdir()
    for k in range(7):
        (other / f"img{k}.jpg").write_bytes(b"x")
    with pytest.raises(DatasetError, match=r"img0\.jpg.*and 2 more"):
        write_partition(ds, other, force=True, progress=False)
    assert len(list(other.iterdir())) == 7
    # an empty folder is written into, no --force needed
    empty = tmp_path / "empty"
    empty.mkdir()
    assert len(write_partition(ds, empty, progress=False)["nodes"]) == 3


def test_out_that_cannot_be_a_folder(ds: ReidDataset, tmp_path: Path):
    afile = tmp_path / "afile"
    afile.write_text("keep me")
    with pytest.raises(DatasetError, match=f"--out {afile} is a file"):
        write_partition(ds, afile, force=True, progress=False)
    with pytest.raises(DatasetError, match=f"--out {afile / 'sub'}: cannot create"):
        write_partition(ds, afile / "sub", progress=False)
    assert afile.read_text() == "keep me"


def test_manifest_lists_every_file(ds: ReidDataset, tmp_path: Path):
    out = tmp_path / "parts"
    meta = write_partition(ds, out, progress=False)
    assert meta["format"] == 3 == read_partition(out)["format"]
    with open(out / MANIFEST, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["path", "bytes"]
    listed = {r["path"]: int(r["bytes"]) for r in rows}
    written = snapshot(out)
    del written[MANIFEST], written["partition.json"]
    assert listed == written
    assert meta["manifest"] == {
        "file": MANIFEST, "files": len(rows),
        "sha256": hashlib.sha256((out / MANIFEST).read_bytes()).hexdigest()}


def test_exchange_swaps_two_folders(tmp_path: Path):
    if not sys.platform.startswith("linux"):
        pytest.skip("renameat2 is Linux only")
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "from_a").touch()
    assert folder_swap.exchange(a, b)
    assert [p.name for p in b.iterdir()] == ["from_a"] and not any(a.iterdir())


@pytest.mark.parametrize("exchange", ["renameat2", "fallback"])
def test_replacement_swaps_in_the_new_partition(ds: ReidDataset, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch,
                                                exchange: str):
    real_exchange, exchanged = folder_swap.exchange, []

    def spy(a: Path, b: Path) -> bool:
        exchanged.append(exchange == "renameat2" and real_exchange(a, b))
        return exchanged[-1]

    monkeypatch.setattr(folder_swap, "exchange", spy)
    out = tmp_path / "parts"
    write_partition(ds, out, progress=False)
    (out / "camera-01" / "style").mkdir()  # run outputs go with the old partition
    meta = write_partition(ds, out, target_camera=3, force=True, progress=False)
    assert exchanged == [exchange == "renameat2" and sys.platform.startswith("linux")]
    assert read_partition(out) == meta and meta["target_camera"] == 3
    assert not (out / "camera-01" / "style").exists()
    assert hidden_siblings(out) == []


def test_kill_between_fallback_renames_restores_the_old_partition(
        ds: ReidDataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    out = tmp_path / "parts"
    old = write_partition(ds, out, progress=False)
    monkeypatch.setattr(folder_swap, "exchange", lambda a, b: False)
    real_rename, renames = os.rename, []

    def rename(src, dst):  # interrupted after "old -> .old-pid", before "new -> out"
        renames.append(src)
        if len(renames) == 2:
            raise KeyboardInterrupt
        real_rename(src, dst)

    monkeypatch.setattr(folder_swap.os, "rename", rename)
    with pytest.raises(KeyboardInterrupt):
        write_partition(ds, out, target_camera=2, force=True, progress=False)
    monkeypatch.undo()
    assert hidden_siblings(out) == []
    assert write_partition(ds, out, progress=False) == old  # whole, so reused


def test_kill_after_the_exchange_leaves_the_new_partition(
        ds: ReidDataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    out = tmp_path / "parts"
    write_partition(ds, out, progress=False)
    real_rmtree, calls = shutil.rmtree, []

    def rmtree(path, *args, **kwargs):  # interrupted while deleting the old partition
        calls.append(path)
        if len(calls) == 1:
            raise KeyboardInterrupt
        real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(folder_swap.shutil, "rmtree", rmtree)
    with pytest.raises(KeyboardInterrupt):
        write_partition(ds, out, target_camera=2, force=True, progress=False)
    monkeypatch.undo()
    assert write_partition(ds, out, target_camera=2, progress=False)["target_camera"] == 2
    assert hidden_siblings(out) == []


def test_damaged_partition_is_not_reused(ds: ReidDataset, tmp_path: Path):
    out = tmp_path / "parts"
    write_partition(ds, out, progress=False)
    # what a kill during the old rmtree-then-rename left behind: files gone
    shutil.rmtree(out / "camera-02" / "images")
    first = sorted((out / "camera-03" / "target_domain").iterdir())[0]
    first.unlink()
    first.write_bytes(b"short")
    with pytest.raises(DatasetError, match=r"parts: the partition is incomplete.*"
                       r"\d+ file\(s\) missing or changed.*camera-02/images/.*--force"):
        write_partition(ds, out, progress=False)
    assert write_partition(ds, out, force=True, progress=False)["target_camera"] == 1
    assert (out / "camera-02" / "images").is_dir()
    write_partition(ds, out, progress=False)  # whole again: reused
    manifest = out / MANIFEST
    manifest.write_text(manifest.read_text().replace("camera-01", "camera-09", 1))
    with pytest.raises(DatasetError, match=r"manifest\.csv \(damaged"):
        write_partition(ds, out, progress=False)


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '{"format": 3}', "\xff\xfe"])
def test_damaged_partition_json_is_named(ds: ReidDataset, tmp_path: Path, text: str):
    out = tmp_path / "parts"
    write_partition(ds, out, progress=False)
    (out / "partition.json").write_bytes(text.encode("latin-1"))
    with pytest.raises(DatasetError, match=r"parts/partition\.json: damaged.*expected"):
        read_partition(out)
    with pytest.raises(DatasetError, match=r"partition\.json: damaged.*--force"):
        write_partition(ds, out, progress=False)
    assert write_partition(ds, out, force=True, progress=False) == read_partition(out)


def test_older_format_is_replaced_only_with_force(ds: ReidDataset, tmp_path: Path):
    out = tmp_path / "parts"
    meta = write_partition(ds, out, progress=False)
    (out / "partition.json").write_text(json.dumps({**meta, "format": 2}))
    with pytest.raises(DatasetError, match=r"not a partition made with these settings.*--force"):
        write_partition(ds, out, progress=False)
    assert write_partition(ds, out, force=True, progress=False)["format"] == 3


def test_leftovers_of_killed_runs_are_removed(ds: ReidDataset, tmp_path: Path,
                                              caplog: pytest.LogCaptureFixture):
    out = tmp_path / "parts"
    dead, alive = dead_pid(), os.getppid()
    for name in (f".parts.partial-{dead}", f".parts.old-{dead}", f".parts.partial-{alive}",
                 ".other.partial-1"):
        (tmp_path / name / "camera-01").mkdir(parents=True)
    with caplog.at_level(logging.WARNING, logger=folder_swap.__name__):
        write_partition(ds, out, progress=False)
    assert hidden_siblings(out) == [f".parts.partial-{alive}"]
    assert (tmp_path / ".other.partial-1").is_dir()
    assert f"removed {tmp_path / f'.parts.partial-{dead}'}" in caplog.text
    assert f"removed {tmp_path / f'.parts.old-{dead}'}" in caplog.text
    assert f"process {alive}, which made it, is still running" in caplog.text


def test_error_messages_use_the_callers_names(ds: ReidDataset, tmp_path: Path):
    names = {"out_name": "partitions-dir", "target_name": "target-camera",
             "force_name": "--force to `python -m dmnreid.data_prep partition`"}
    with pytest.raises(DatasetError, match=r"^target-camera 9 has no training images"):
        write_partition(ds, tmp_path / "p", target_camera=9, progress=False, **names)
    afile = tmp_path / "afile"
    afile.touch()
    with pytest.raises(DatasetError, match=r"^partitions-dir .* choose another partitions-dir$"):
        write_partition(ds, afile, progress=False, **names)
    write_partition(ds, tmp_path / "p", progress=False)
    with pytest.raises(DatasetError, match="another partitions-dir or pass --force to `python"):
        write_partition(ds, tmp_path / "p", target_camera=2, progress=False, **names)


def test_cli_refuses_bad_out_and_reports_what_it_did(synthetic_root: Path, tmp_path: Path):
    root = tmp_path / "net"
    shutil.copytree(synthetic_root, root)
    args = ("partition", "--dataset", "synthetic", "--root", str(root), "--quiet")
    before = snapshot(root)
    wipe = cli(*args, "--out", str(root), "--force")
    assert wipe.returncode == 2 and "Traceback" not in wipe.stderr
    assert "is the dataset folder" in wipe.stderr and snapshot(root) == before
    (tmp_path / "afile").touch()
    for out in ("afile", "afile/sub"):
        bad = cli(*args, "--out", str(tmp_path / out), "--force")
        assert bad.returncode == 2 and "Traceback" not in bad.stderr
        assert f"--out {tmp_path / out}" in bad.stderr
    # an unreadable image, skipped: the terminal says how many and where the list is
    image = sorted((root / "bounding_box_train").iterdir())[0]
    image.unlink()
    image.write_bytes(b"not a jpeg")
    leftover = tmp_path / f".parts.partial-{dead_pid()}"
    leftover.mkdir()
    out = tmp_path / "parts"
    made = cli(*args, "--out", str(out), "--skip-corrupt")
    assert made.returncode == 0, made.stderr
    assert "1 unreadable image(s) left out (--skip-corrupt)" in made.stderr
    assert f'"skipped_corrupt" in {out / "partition.json"}' in made.stderr
    assert f"note: removed {leftover}" in made.stderr and not leftover.exists()
    (out / "evaluator" / "query.csv").unlink()
    broken = cli(*args, "--out", str(out), "--skip-corrupt")
    assert broken.returncode == 2 and "Traceback" not in broken.stderr
    assert "evaluator/query.csv (missing)" in broken.stderr and "--force" in broken.stderr
    assert "node folders" not in broken.stdout
    fixed = cli(*args, "--out", str(out), "--skip-corrupt", "--force")
    assert fixed.returncode == 0 and (out / "evaluator" / "query.csv").is_file()
