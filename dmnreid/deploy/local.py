"""Flower processes on 127.0.0.1, started from this Python's environment and stopped by PID:
what the tests, the benchmarks and ``experiments scale`` share to run a SuperLink of their own.

Each gets a Flower home of its own (``FLWR_HOME``), so a user's Flower configuration and
SuperLink stay untouched, and runs in the current environment (no dependency installation).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from dmnreid.deploy.processes import Ports, grpc_line

BIN = Path(sys.executable).parent


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def free_ports(grpc: bool = grpc_line()) -> Ports:
    """Free ports for a local SuperLink: three for the gRPC line, one otherwise."""
    return Ports(*(free_port() for _ in range(3))) if grpc else Ports(*[free_port()] * 2)


def wait_for_port(port: int, timeout: float, proc: subprocess.Popen) -> None:
    """Return once something listens on ``port``; an error if ``proc`` exits first or
    nothing listens after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def stop_process(proc: subprocess.Popen) -> None:
    """Stop a process started in its own session, and its children, by PID."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    except ProcessLookupError:
        pass


def local_environment(home: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of Flower processes with the Flower home ``home``: this Python's
    tools first on PATH, no dependency installation, no update check."""
    return {**os.environ, **(extra or {}), "FLWR_HOME": str(home),
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
            "FLWR_DISABLE_UPDATE_CHECK": "1"}


def insecure_superlink_command(ports: Ports, grpc: bool = grpc_line()) -> list[str]:
    """``flower-superlink`` without TLS on 127.0.0.1 (add ``--simulation`` to simulate)."""
    addresses = ["--fleet-api-address", f"127.0.0.1:{ports.fleet}",
                 "--control-api-address", f"127.0.0.1:{ports.control}",
                 "--serverappio-api-address", f"127.0.0.1:{ports.appio}"] if grpc else \
        ["--host", "127.0.0.1", "--port", str(ports.control)]
    return [str(BIN / "flower-superlink"), "--insecure", "--isolation", "subprocess",
            *addresses]


def connection_config(name: str, port: int) -> str:
    """A Flower home's ``config.toml`` whose default connection ``name`` is the insecure
    SuperLink on 127.0.0.1:``port``."""
    return (f'[superlink]\ndefault = "{name}"\n\n[superlink.{name}]\n'
            f'address = "127.0.0.1:{port}"\ninsecure = true\n')
