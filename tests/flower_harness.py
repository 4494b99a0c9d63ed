"""Real Flower processes for end-to-end tests: a SuperLink started here, stopped by its PID.

Each harness has its own ``FLWR_HOME`` (a temporary folder) holding a connection named
``test`` to its SuperLink, so tests never touch a user's Flower configuration or SuperLink.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_port(port: int, timeout: float, proc: subprocess.Popen) -> None:
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


class FlowerLink:
    """A ``flower-superlink`` on 127.0.0.1 (simulation or deployment), its SuperNodes, and
    the CLI calls that use it."""

    def __init__(self, home: Path, env: dict[str, str], simulation: bool = True) -> None:
        self.home = home
        self.port = free_port()
        self.env = {**os.environ, **env, "FLWR_HOME": str(home),
                    "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
                    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
                    "FLWR_DISABLE_UPDATE_CHECK": "1"}
        home.mkdir(parents=True, exist_ok=True)
        (home / "config.toml").write_text(
            '[superlink]\ndefault = "test"\n\n[superlink.test]\n'
            f'address = "127.0.0.1:{self.port}"\ninsecure = true\n')
        self.log = (home / "superlink.log").open("w")
        self.proc = subprocess.Popen(
            [str(BIN / "flower-superlink"), "--insecure", *(["--simulation"] if simulation
                                                            else []),
             "--isolation", "subprocess", "--host", "127.0.0.1", "--port", str(self.port)],
            env=self.env, cwd=home, stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.supernodes: list[subprocess.Popen] = []
        _wait_for_port(self.port, 60, self.proc)

    def start_supernode(self, node_config: str) -> subprocess.Popen:
        """A real ``flower-supernode`` connected to this SuperLink."""
        port = free_port()
        log = (self.home / f"supernode-{port}.log").open("w")
        proc = subprocess.Popen(
            [str(BIN / "flower-supernode"), "--insecure", "--superlink",
             f"127.0.0.1:{self.port}", "--port", str(port), "--node-config", node_config],
            env=self.env, cwd=self.home, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.supernodes.append(proc)
        _wait_for_port(port, 60, proc)
        return proc

    def stop(self) -> None:
        for proc in self.supernodes:
            stop_process(proc)
        stop_process(self.proc)
        self.log.close()

    def _flwr(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / "flwr"), *args], env=self.env, cwd=PROJECT,
                              capture_output=True, text=True, timeout=timeout)

    def start_run(self, run_config: dict[str, object], supernodes: int | None = None,
                  stream: bool = True, app: Path = PROJECT) -> tuple[int, str]:
        """``flwr run .`` (or another Flower ``app`` folder); with ``stream`` it returns when
        the run has ended.

        ``supernodes`` sets the simulated federation's size (simulation only).
        """
        overrides = " ".join(f"{k}={json.dumps(v)}" for k, v in run_config.items())
        args = ["run", str(app), "--run-config", overrides]
        if supernodes is not None:
            args += ["--federation-config", f"num-supernodes={supernodes}"]
        result = self._flwr(*args, *(["--stream"] if stream else []))
        output = result.stdout + result.stderr
        found = re.search(r"Successfully started run (\d+)", output)
        if not found:
            raise RuntimeError(f"flwr run failed ({result.returncode}):\n{output}")
        return int(found.group(1)), output

    def status(self, run_id: int) -> str:
        """The run's status as ``flwr ls`` reports it, e.g. ``finished:completed``."""
        result = self._flwr("ls", "--format", "json", timeout=60)
        runs = json.loads(result.stdout)["runs"]
        return next(r["status"] for r in runs if int(r["run-id"]) == run_id)

    def wait(self, run_id: int, timeout: float = 900) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.status(run_id)
            if status.startswith("finished"):
                return status
            time.sleep(1)
        raise TimeoutError(f"run {run_id} still {status} after {timeout} s")

    def stop_run(self, run_id: int) -> None:
        self._flwr("stop", str(run_id), timeout=60)
