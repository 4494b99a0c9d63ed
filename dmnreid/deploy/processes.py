"""The command lines that start a secure SuperLink and SuperNode, for the installed Flower line.

flwr 1.30 (the newest release for Python 3.10, i.e. JetPack 6) serves gRPC on three ports:
Fleet (SuperNodes, 9092), Control (``flwr``, 9093) and ServerAppIo (the ServerApp, 9091).
flwr 1.40 and later serve one HTTP port (8000). The TLS and authentication flags are the
same. One Flower line across a deployment is the rule: a 1.30 SuperNode cannot talk to a 1.42
SuperLink.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import flwr
from packaging.version import Version

from dmnreid.deploy.credentials import CA_CERT, SERVER_CERT, SERVER_KEY


def grpc_line(version: str = flwr.__version__) -> bool:
    """Whether this Flower speaks gRPC on three ports (before 1.40) or HTTP on one."""
    return Version(version) < Version("1.40")


@dataclass(frozen=True)
class Ports:
    """Where a SuperLink listens: ``fleet`` for SuperNodes, ``control`` for ``flwr``
    (one and the same port from flwr 1.40 on) and, before 1.40, ``appio`` for the ServerApp."""

    fleet: int
    control: int
    appio: int | None = None

    @classmethod
    def default(cls, grpc: bool = grpc_line()) -> Ports:
        return cls(9092, 9093, 9091) if grpc else cls(8000, 8000)


def superlink_command(secrets: Path, database: Path, ports: Ports, host: str = "0.0.0.0",
                      grpc: bool = grpc_line()) -> list[str]:
    """``flower-superlink`` with TLS (``secrets``: ca.crt, server.pem, server.key from
    ``python -m dmnreid.deploy tls``), SuperNode authentication and its state in
    ``database`` (registered keys survive a restart)."""
    if grpc:
        addresses = ["--fleet-api-address", f"{host}:{ports.fleet}",
                     "--control-api-address", f"{host}:{ports.control}",
                     "--serverappio-api-address", f"127.0.0.1:{ports.appio}"]
    else:
        addresses = ["--host", host, "--port", str(ports.fleet),
                     "--disable-runtime-dependency-installation"]
    return ["flower-superlink", "--ssl-ca-certfile", str(secrets / CA_CERT),
            "--ssl-certfile", str(secrets / SERVER_CERT),
            "--ssl-keyfile", str(secrets / SERVER_KEY), "--enable-supernode-auth",
            "--database", str(database), "--isolation", "subprocess", *addresses]


def node_config(data_dir: Path, weights_file: Path | None = None) -> str:
    """The SuperNode's node config: its own camera folder, and its own weights file if any."""
    config = f"data-dir='{data_dir}'"
    return config + (f" weights-file='{weights_file}'" if weights_file else "")


def supernode_command(superlink: str, ca: Path, key: Path | None, data_dir: Path, port: int,
                      weights_file: Path | None = None, grpc: bool = grpc_line()) -> list[str]:
    """``flower-supernode`` for one camera: TLS verified against ``ca`` (the network's CA,
    not the system's), authenticated with its private ``key`` (None only for a SuperLink
    without authentication), its own data folder, and ``port`` for its local runtime API
    (one per SuperNode on a machine)."""
    local = ["--clientappio-api-address", f"127.0.0.1:{port}"] if grpc else ["--port", str(port)]
    auth = ["--auth-supernode-private-key", str(key)] if key is not None else []
    return ["flower-supernode", "--root-certificates", str(ca), "--superlink", superlink,
            *auth, *local, "--node-config", node_config(data_dir, weights_file)]


def connection_toml(name: str, address: str, ca: Path) -> str:
    """A ``[superlink.<name>]`` section for ``$FLWR_HOME/config.toml``: how ``flwr run`` and
    ``flwr supernode register`` reach the SuperLink (its Control API), over TLS."""
    return f'\n[superlink.{name}]\naddress = "{address}"\nroot-certificates = "{ca}"\n'
