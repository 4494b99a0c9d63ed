"""The data-prep command line, run as a user runs it (a subprocess)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "real-reid-samples"
KEYS = {"images", "ids", "cameras", "tracklets"}


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dmnreid.data_prep", *args],
                          capture_output=True, text=True, timeout=300)


def test_synthetic_summary_partition(tmp_path: Path):
    root = tmp_path / "syn"
    made = cli("synthetic", "--out", str(root), "--cameras", "3", "--train-ids", "8",
               "--test-ids", "5", "--quiet")
    assert made.returncode == 0, made.stderr
    assert (root / "contact_sheet.png").is_file()
    summary = cli("summary", "--dataset", "synthetic", "--root", str(root), "--json")
    assert summary.returncode == 0, summary.stderr
    table = json.loads(summary.stdout)
    assert set(table) == {"train", "query", "gallery"}
    assert all(set(row) == KEYS for row in table.values())
    assert table["train"]["ids"] == 8 and table["query"]["ids"] == 5
    assert table["train"]["cameras"] == 3
    # one query per (identity, camera)
    assert table["query"]["images"] == table["query"]["tracklets"]
    parts = cli("partition", "--dataset", "synthetic", "--root", str(root), "--out",
                str(tmp_path / "parts"), "--target-camera", "2", "--quiet")
    assert parts.returncode == 0, parts.stderr
    meta = json.loads((tmp_path / "parts" / "partition.json").read_text())
    assert meta["target_camera"] == 2 and len(meta["nodes"]) == 3
    assert sum(n["tracklets"] for n in meta["nodes"]) == table["train"]["tracklets"]
    text = cli("summary", "--dataset", "synthetic", "--root", str(root))
    assert "tracklets" in text.stdout and "train" in text.stdout


@pytest.mark.skipif(not SHARED.is_dir(), reason=f"real dataset samples absent ({SHARED})")
def test_summary_of_partial_msmt17_reports_missing_files():
    result = cli("summary", "--dataset", "msmt17", "--root", str(SHARED / "msmt17"), "--json")
    assert result.returncode == 0, result.stderr
    table = json.loads(result.stdout)
    assert table["train"]["images"] == 0 and table["query"]["images"] == 1
    assert "absent" in result.stderr and "30248" in result.stderr


def test_errors_name_the_problem(tmp_path: Path):
    missing = cli("summary", "--dataset", "market1501", "--root", str(tmp_path / "nope"))
    assert missing.returncode == 2
    assert str(tmp_path / "nope") in missing.stderr and "Traceback" not in missing.stderr
    empty = cli("summary", "--dataset", "mars", "--root", str(tmp_path))
    assert empty.returncode == 2 and "Traceback" not in empty.stderr
    no_marker = cli("summary", "--dataset", "synthetic", "--root", str(tmp_path))
    assert no_marker.returncode == 2 and "synthetic --out" in no_marker.stderr


def test_help_explains_every_option():
    for command in ("summary", "partition", "synthetic"):
        result = cli(command, "--help")
        assert result.returncode == 0
        assert "--root" in result.stdout or "--out" in result.stdout
