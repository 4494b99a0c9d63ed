"""Real Flower processes for end-to-end tests: a SuperLink started here, stopped by its PID.

Each harness has its own ``FLWR_HOME`` (a temporary folder) holding a connection named
``test`` to its SuperLink, so tests never touch a user's Flower configuration or SuperLink.

Both Flower lines the project supports are driven: flwr 1.30 (the Jetson line, Python 3.10)
serves gRPC on three ports (Fleet for SuperNodes, Control for ``flwr``, ServerAppIo for the
ServerApp), flwr 1.40+ serves everything over HTTP on one port.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import tomli_w

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from dmnreid.config import RunConfig
from dmnreid.data_prep.partition import read_partition
from dmnreid.deploy.credentials import CA_CERT, make_node_key, make_tls
from dmnreid.deploy.local import (
    BIN,
    free_port,
    free_ports,
    insecure_superlink_command,
    local_environment,
    stop_process,
    wait_for_port,
)
from dmnreid.deploy.processes import (
    connection_toml,
    grpc_line,
    superlink_command,
    supernode_command,
)
from dmnreid.prepare import prepare_partitions
from dmnreid.reid.pretrain import ensure_source_weights

PROJECT = Path(__file__).resolve().parents[1]
GRPC_LINE = grpc_line()


class FlowerLink:
    """A ``flower-superlink`` on 127.0.0.1 (simulation or deployment), its SuperNodes, and
    the CLI calls that use it.

    ``credentials`` (a folder from :func:`dmnreid.deploy.credentials.make_tls`) turns on TLS
    and SuperNode authentication: only SuperNodes whose public key was registered
    (:meth:`register`) may join, and every connection is verified against ``ca.crt``.
    """

    def __init__(self, home: Path, env: dict[str, str], simulation: bool = True,
                 credentials: Path | None = None) -> None:
        self.home = home
        self.ports = free_ports(GRPC_LINE)
        self.port = self.ports.control
        self.credentials = credentials
        self.env = local_environment(home, env)
        home.mkdir(parents=True, exist_ok=True)
        address = f"127.0.0.1:{self.port}"
        connection = f'\n[superlink.test]\naddress = "{address}"\ninsecure = true\n' \
            if credentials is None else connection_toml("test", address, credentials / CA_CERT)
        (home / "config.toml").write_text(f'[superlink]\ndefault = "test"\n{connection}')
        if credentials is None:
            command = insecure_superlink_command(self.ports, GRPC_LINE)
        else:  # exactly what `python -m dmnreid.deploy superlink` starts, on free ports
            command = superlink_command(credentials, home / "state.db", self.ports,
                                        "127.0.0.1", GRPC_LINE)
            command[0] = str(BIN / command[0])
        self.log = (home / "superlink.log").open("w")
        self.proc = subprocess.Popen(
            [*command, *(["--simulation"] if simulation else [])],
            env=self.env, cwd=home, stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.supernodes: list[subprocess.Popen] = []
        try:  # a simulation SuperLink serves no Fleet API (flwr 1.30 opens no port for it)
            for port in {self.ports.control, *([] if simulation else [self.ports.fleet])}:
                wait_for_port(port, 60, self.proc)
        except BaseException:
            self.stop()
            raise

    def start_supernode(self, data_dir: Path, key: Path | None, cwd: Path,
                        env: dict[str, str] | None = None, weights_file: Path | None = None,
                        tls: str = "ca", retries: int | None = None) -> subprocess.Popen:
        """A real ``flower-supernode`` for the camera folder ``data_dir``, started as
        ``python -m dmnreid.deploy supernode`` starts it on a device.

        ``key``: its authentication private key; ``cwd``/``env``: the device's own working
        folder and environment (cache); ``tls``: ``ca`` (verifies the SuperLink against
        ca.crt), ``system`` (the system's roots only) or ``insecure``, the last two to show
        they are refused; ``retries`` bounds its reconnection attempts (a refused node exits).
        """
        if self.credentials is None:
            raise ValueError("SuperNodes are started on a SuperLink with credentials")
        port = free_port()
        command = supernode_command(f"127.0.0.1:{self.ports.fleet}",
                                    self.credentials / CA_CERT, key, data_dir, port,
                                    weights_file, GRPC_LINE)
        command[0] = str(BIN / command[0])
        at = command.index("--root-certificates")
        command[at:at + 2] = {"ca": command[at:at + 2], "system": [],
                              "insecure": ["--insecure"]}[tls]
        if retries is not None:
            command += ["--max-retries", str(retries)]
        log_path = cwd / f"supernode-{port}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("w") as log:
            proc = subprocess.Popen(command, env={**self.env, **(env or {})}, cwd=cwd,
                                    stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        proc.log_path = log_path  # type: ignore[attr-defined]
        self.supernodes.append(proc)  # stopped with the SuperLink, whatever happens next
        if tls == "ca" and retries is None:  # expected to join: wait until it is up
            wait_for_port(port, 60, proc)
        return proc

    def register(self, public_key: Path) -> int:
        """``flwr supernode register``: the node id the SuperLink gives this key."""
        result = self._flwr("supernode", "register", str(public_key), "test", "--format", "json",
                            timeout=60)
        found = re.search(r'"node-id":\s*"?(\d+)', result.stdout)
        if not found:
            raise RuntimeError(f"register failed: {result.stdout}{result.stderr}")
        return int(found.group(1))

    def nodes(self) -> dict[int, str]:
        """``flwr supernode list``: node id -> status (registered, online, offline...)."""
        result = self._flwr("supernode", "list", "test", "--format", "json", timeout=60)
        return {int(n["node-id"]): n["status"] for n in json.loads(result.stdout)["nodes"]}

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
        """The run's final status. Each ``flwr ls`` is a Python process that takes about a
        core-second here, so the checks space out (1 s, then up to 5 s apart) rather than
        slow the run they wait for."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            status = self.status(run_id)
            if status.startswith("finished"):
                return status
            time.sleep(min(5.0, 1.0 + (time.monotonic() - start) / 20))
        raise TimeoutError(f"run {run_id} still {status} after {timeout} s")

    def stop_run(self, run_id: int) -> None:
        self._flwr("stop", str(run_id), timeout=60)


def client_app_folder(folder: Path, name: str, source: str) -> Path:
    """A Flower app folder: the project's ServerApp and configuration, with the ClientApp
    ``app`` of a module written from ``source`` (the project's handlers behind a test mod)."""
    project = tomllib.loads((PROJECT / "pyproject.toml").read_text())
    folder.mkdir(parents=True)
    app = {"project": {"name": f"dmnreid-{name}", "version": "0.1.0", "dependencies": []},
           "tool": {"flwr": {"app": {
               "publisher": "dmnreid",
               "components": {"serverapp": "dmnreid.server_app:app",
                              "clientapp": f"{name}_client:app"},
               "config": project["tool"]["flwr"]["app"]["config"]}}}}
    (folder / "pyproject.toml").write_text(tomli_w.dumps(app))
    (folder / f"{name}_client.py").write_text(source)
    return folder


def camera_network(root: Path, run_config: dict[str, object]) -> dict:
    """What a deployed test or benchmark needs under ``root``: the server's partition and
    pretrained weights (in its own cache), TLS credentials, and one device folder per camera
    holding a copy of that camera's folder (not a path into the server's) and its own key;
    camera 1's device also brings its own copy of the weights."""
    server_cache = root / "server-cache"
    saved = os.environ.get("DMNREID_CACHE")
    os.environ["DMNREID_CACHE"] = str(server_cache)  # what the SuperLink's ServerApp will find
    try:
        cfg = RunConfig.from_mapping({**run_config, "partitions-dir": str(root / "server-nodes")})
        partitions = prepare_partitions(cfg)
        weights = ensure_source_weights(cfg)
    finally:
        if saved is None:
            os.environ.pop("DMNREID_CACHE")
        else:
            os.environ["DMNREID_CACHE"] = saved
    make_tls(root / "tls", ["localhost"])
    devices = {}
    for node in read_partition(partitions)["nodes"]:
        device = root / f"device-{node['camera']}"
        shutil.copytree(partitions / node["node"], device / "data")
        make_node_key(device / "keys", "supernode")
        devices[node["camera"]] = device
    own = devices[1] / "weights" / "resnet18-standin.pt"  # this device brings its own copy
    own.parent.mkdir()
    shutil.copyfile(weights, own)
    return {"root": root, "partitions": partitions, "server_cache": server_cache,
            "weights": weights, "devices": devices, "own_weights": own}


def start_device(link: FlowerLink, network: dict, camera: int, **options) -> subprocess.Popen:
    """Camera ``camera``'s SuperNode, in its own folder with its own cache (camera 1 with its
    own copy of the weights)."""
    device = network["devices"][camera]
    return link.start_supernode(device / "data", options.pop("key", device / "keys" /
                                                             "supernode"),
                                options.pop("cwd", device),
                                {"DMNREID_CACHE": str(device / "cache")},
                                network["own_weights"] if camera == 1 else None, **options)


def deployed_link(network: dict) -> FlowerLink:
    """A SuperLink with TLS and SuperNode authentication and every camera's registered
    SuperNode (``link.ids``: camera -> node id, ``link.devices``: camera -> its process)."""
    link = FlowerLink(network["root"] / "flwr-home",
                      {"DMNREID_CACHE": str(network["server_cache"])}, simulation=False,
                      credentials=network["root"] / "tls")
    try:
        link.ids, link.devices = {}, {}
        for camera, device in network["devices"].items():
            link.ids[camera] = link.register(device / "keys" / "supernode.pub")
            link.devices[camera] = start_device(link, network, camera)
    except BaseException:
        link.stop()
        raise
    return link
