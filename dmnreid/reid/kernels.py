"""CPU kernel paths pinned, so that one computation gives the same bits on every x86-64 machine.

PyTorch picks its CPU kernels per machine, and each pick rounds floats its own way:

- ATen's vectorised kernels (batch norm, pooling, softmax, the optimizer) by the CPU's
  capability: AVX-512, AVX2 or plain (``ATEN_CPU_CAPABILITY`` overrides it);
- oneDNN's convolutions by instruction set, and their blocking by the CPU's cache sizes;
- MKL's GEMM by vendor and instruction set;
- reductions split by the number of threads.

Training amplifies those last-bit differences: the stand-in pretraining ended 6 mAP apart on an
AVX2 and an AVX-512 machine (``benchmarks/stand_in_kernels.py`` shows which knob does what).
A pinned computation runs in its own process with ATen at AVX2 (plain kernels where the CPU has
no AVX2), no oneDNN and no NNPACK (convolutions by ATen's own im2col and MKL's GEMM, in
channels-last layout, the fastest such path), MKL's conditional numerical reproducibility in its
``COMPATIBLE`` branch (the same code on Intel and AMD CPUs) and a fixed team of threads.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from collections import deque
from collections.abc import Callable, Mapping

import torch

THREADS = 2  # fixed: reductions split by the thread count; 2 = this project's CI machines
PIN_VERSION = 1  # part of a pinned result's cache name: bump when the pinning changes
MKL_BRANCH = "COMPATIBLE"


def pinned_capability() -> str:
    """The ATen capability a pinned computation runs: ``avx2`` on an x86-64 CPU that has it
    (every one since 2015), else ``default`` (older x86 and ARM: another stand-in, recorded)."""
    supported = getattr(torch.cpu, "_is_avx2_supported", lambda: False)
    return "avx2" if platform.machine().lower() in ("x86_64", "amd64") and supported() \
        else "default"


def pinned_environment(base: Mapping[str, str]) -> dict[str, str]:
    """``base`` with the environment a pinned process must start with (read by ATen, MKL and
    OpenMP when they load, so it cannot be set from inside the process)."""
    threads = str(THREADS)
    return {**base, "ATEN_CPU_CAPABILITY": pinned_capability(), "MKL_CBWR": MKL_BRANCH,
            "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads,
            "OMP_DYNAMIC": "FALSE", "MKL_DYNAMIC": "FALSE"}


def pin_in_process() -> None:
    """The switches a pinned process sets itself, first thing: no oneDNN, no NNPACK, the
    fixed thread count."""
    torch.backends.mkldnn.enabled = False
    torch.backends.nnpack.set_flags(False)
    torch.set_num_threads(THREADS)


def is_pinned() -> bool:
    """Whether this process runs pinned (its environment and switches as above)."""
    return (os.environ.get("MKL_CBWR") == MKL_BRANCH
            and os.environ.get("ATEN_CPU_CAPABILITY") == pinned_capability()
            and not torch.backends.mkldnn.enabled and torch.get_num_threads() == THREADS)


def kernel_record() -> dict[str, object]:
    """What decided this process's kernel paths: a run or result records it beside its
    numbers, so that two machines' figures can be told apart."""
    return {"torch": torch.__version__, "cpu-capability": torch.backends.cpu.get_cpu_capability(),
            "machine": platform.machine(), "threads": torch.get_num_threads(),
            "onednn": bool(torch.backends.mkldnn.enabled),
            "mkl-cbwr": os.environ.get("MKL_CBWR", ""), "pinned": is_pinned()}


def run_module(module: str, args: list[str], say: Callable[[str], None],
               env: Mapping[str, str] | None = None, pinned: bool = True) -> None:
    """``python -m module args`` in a process of its own (pinned unless ``pinned`` is False),
    its output passed line by line to ``say``; a failure raises with its last lines."""
    base = dict(os.environ if env is None else env)
    process = subprocess.Popen(
        [sys.executable, "-m", module, *args], stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
        env=pinned_environment(base) if pinned else base)
    tail: deque[str] = deque(maxlen=20)
    assert process.stdout is not None
    for line in process.stdout:
        tail.append(line.rstrip())
        say(line.rstrip())
    if process.wait() != 0:
        raise RuntimeError(f"python -m {module} failed (exit {process.returncode}):\n"
                           + "\n".join(tail))
