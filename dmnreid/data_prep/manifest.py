"""A folder's manifest: every file it holds with its size, so a reused folder is checked
whole and a copy cut short by a kill is never taken for a complete one."""

from __future__ import annotations

import csv
import hashlib
import io
import os
from pathlib import Path

MANIFEST = "manifest.csv"


def write_manifest(folder: Path) -> dict:
    """List every file in ``folder`` (path, bytes); returns what the folder's own metadata
    records of the list (file count, sha256 of the list), to be written after it."""
    rows, prefix = [], len(os.path.join(folder, ""))
    for dirpath, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(dirpath, name)
            rows.append((path[prefix:].replace(os.sep, "/"), os.stat(path).st_size))
    with open(folder / MANIFEST, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "bytes"])
        writer.writerows(sorted(rows))
    digest = hashlib.sha256((folder / MANIFEST).read_bytes()).hexdigest()
    return {"file": MANIFEST, "files": len(rows), "sha256": digest}


def manifest_damage(out: Path, recorded: object, meta_name: str) -> list[str]:
    """The manifest's files that are missing or changed size ([] when ``out`` is whole).

    ``recorded`` is what :func:`write_manifest` returned, as kept in the metadata file
    ``meta_name``; files added since (caches, outputs of runs) are ignored.
    """
    try:
        data = (out / MANIFEST).read_bytes()
    except OSError:
        return [f"{MANIFEST} (missing)"]
    if not isinstance(recorded, dict) or hashlib.sha256(data).hexdigest() != recorded.get(
            "sha256"):
        return [f"{MANIFEST} (damaged: its sha256 differs from the one in {meta_name})"]
    bad = []
    for rel, size in list(csv.reader(io.StringIO(data.decode("utf-8"))))[1:]:
        try:
            actual = os.stat(os.path.join(out, rel)).st_size
        except OSError:
            bad.append(f"{rel} (missing)")
            continue
        if actual != int(size):
            bad.append(f"{rel} ({actual} bytes, expected {size})")
    return bad
