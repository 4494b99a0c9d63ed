"""The installed stack works together: torch and torchvision are a matching pair; on the
Jetson line an installed PyTorch build is kept."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
import torchvision
from packaging.version import Version
from torchvision.ops import nms

PROJECT = Path(__file__).resolve().parents[1]


def test_torchvision_ops_load_against_this_torch():
    # A torchvision built for another torch fails here ("torchvision::nms does not exist").
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 10.0, 10.0], [20, 20, 30, 30]])
    keep = nms(boxes, torch.tensor([0.9, 0.8, 0.7]), iou_threshold=0.5)
    assert keep.tolist() == [0, 2]
    pair = (torch.__version__.split("+")[0], torchvision.__version__.split("+")[0])
    if sys.version_info >= (3, 11):
        assert pair == ("2.15.0", "0.29.2")
    else:  # the Jetson line takes any torch below 2.13 (NVIDIA's build on a Jetson)
        assert Version(pair[0]) < Version("2.13"), pair


def _python310() -> str | None:
    """A Python 3.10 interpreter (the Jetson line), from pyenv or the PATH."""
    try:
        prefix = subprocess.run(["pyenv", "prefix", "3.10"], capture_output=True, text=True,
                                check=True).stdout.strip()
        return str(Path(prefix) / "bin" / "python")
    except (OSError, subprocess.CalledProcessError):
        return shutil.which("python3.10")


def _wheel(folder: Path, name: str, version: str) -> Path:
    """A minimal wheel standing in for NVIDIA's Jetson build (it cannot be installed here):
    what pip sees of it is its name and its local pre-release version."""
    info = f"{name}-{version}.dist-info"
    files = {f"{name}/__init__.py": f'__version__ = "{version}"\n',
             f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                              "Tag: py3-none-any\n"}
    path = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as whl:
        record = []
        for name_, text in files.items():
            whl.writestr(name_, text)
            digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest())
            record.append(f"{name_},sha256={digest.rstrip(b'=').decode()},{len(text)}")
        whl.writestr(f"{info}/RECORD", "\n".join([*record, f"{info}/RECORD,,"]) + "\n")
    return path


def test_a_jetson_keeps_nvidias_pytorch(tmp_path: Path):
    """Installing the app on a Python 3.10 device that already has NVIDIA's PyTorch build
    leaves that build alone (pip resolves the whole project, nothing is installed)."""
    python = _python310()
    if python is None:
        pytest.skip("no Python 3.10 on this machine (pyenv prefix 3.10 / python3.10)")
    venv = tmp_path / "jetson"
    subprocess.run([python, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip"]
    nvidia = [_wheel(tmp_path, "torch", "2.5.0a0+872d972e41.nv24.8"),
              _wheel(tmp_path, "torchvision", "0.20.0a0+afc54f7")]
    subprocess.run([*pip, "install", "-q", *map(str, nvidia)], check=True)

    def would_install(*requirement: str) -> set[str]:
        report = tmp_path / "report.json"
        subprocess.run([*pip, "install", "-q", "--dry-run", "--report", str(report),
                        *requirement], check=True, capture_output=True)
        return {i["metadata"]["name"] for i in json.loads(report.read_text())["install"]}

    planned = would_install("-e", str(PROJECT))
    assert "flwr" in planned and not planned & {"torch", "torchvision"}, planned
    assert "torch" in would_install("torch==2.12.0")  # what an exact pin would have done
