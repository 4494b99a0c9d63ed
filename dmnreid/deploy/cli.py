"""``python -m dmnreid.deploy``: credentials, and the secure SuperLink and SuperNodes.

``tls`` and ``keys`` make the credentials; ``superlink`` and ``supernode`` replace themselves
with ``flower-superlink``/``flower-supernode`` started with the right flags for the installed
Flower line (same PID, so a service manager can stop it); ``connection`` tells ``flwr`` where
the SuperLink is.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from dmnreid.deploy.credentials import CredentialsError, make_node_key, make_tls
from dmnreid.deploy.processes import (
    Ports,
    connection_toml,
    superlink_command,
    supernode_command,
)


def _tls(args: argparse.Namespace) -> None:
    for path in make_tls(args.out, args.san, args.days):
        print(path)
    print(f"keep {args.out / 'ca.key'} offline: whoever holds it can impersonate the "
          "SuperLink", file=sys.stderr)


def _keys(args: argparse.Namespace) -> None:
    names = [f"camera-{c:02d}" for c in args.camera] + list(args.name)
    if not names:
        raise CredentialsError("name at least one key: --camera N or --name NAME")
    for name in names:
        private, public = make_node_key(args.out, name)
        print(f"{private}  (copy to that device only)\n{public}  (register: flwr supernode "
              f"register {public} <connection>)")


def _exec(command: list[str]) -> None:
    print("+ " + " ".join(command), file=sys.stderr, flush=True)
    os.execvp(command[0], command)


def _superlink(args: argparse.Namespace) -> None:
    _exec(superlink_command(args.secrets, args.database or args.secrets / "superlink-state.db",
                            Ports.default(), args.host))


def _supernode(args: argparse.Namespace) -> None:
    for path, what in ((args.ca, "--ca"), (args.key, "--key")):
        if not path.is_file():
            raise CredentialsError(f"{what} {path}: no such file on this device")
    if not (args.data_dir / "node.json").is_file():
        raise CredentialsError(f"--data-dir {args.data_dir}: not a node folder (no node.json); "
                               "see docs/deployment.md, 'Each device's data'")
    address = args.superlink if ":" in args.superlink else \
        f"{args.superlink}:{Ports.default().fleet}"
    _exec(supernode_command(address, args.ca, args.key, args.data_dir.resolve(), args.port,
                            args.weights_file))


def _connection(args: argparse.Namespace) -> None:
    home = Path(os.environ.get("FLWR_HOME", Path.home() / ".flwr"))
    config = home / "config.toml"
    text = config.read_text() if config.is_file() else ""
    if f"[superlink.{args.name}]" in text:
        raise CredentialsError(f"{config} already has a connection named {args.name!r}")
    address = args.superlink if ":" in args.superlink else \
        f"{args.superlink}:{Ports.default().control}"
    home.mkdir(parents=True, exist_ok=True)
    config.write_text(text + connection_toml(args.name, address, args.ca.resolve()))
    print(f"{config}: connection {args.name!r} to {address}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m dmnreid.deploy",
        description="Credentials for a dmnreid camera network: the SuperLink's TLS "
        "certificate (signed by a CA of your own) and one authentication key pair per camera. "
        "Existing files are never overwritten.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("tls", help="a CA (ca.crt, ca.key) and the SuperLink's certificate "
                       "(server.pem, server.key)")
    p.add_argument("--out", required=True, type=Path, help="folder to write into")
    p.add_argument("--san", action="append", default=[],
                   help="an address devices use to reach the SuperLink (IP or host name); "
                   "repeat for several; 127.0.0.1 is always included")
    p.add_argument("--days", type=int, default=365, help="validity (default 365)")
    p.set_defaults(func=_tls)
    p = sub.add_parser("keys", help="ECDSA P-384 key pairs (OpenSSH format) for SuperNodes")
    p.add_argument("--out", required=True, type=Path, help="folder to write into")
    p.add_argument("--camera", type=int, nargs="*", default=[],
                   help="camera numbers: keys camera-NN and camera-NN.pub")
    p.add_argument("--name", nargs="*", default=[], help="other key names")
    p.set_defaults(func=_keys)
    p = sub.add_parser("superlink", help="start the SuperLink with TLS and SuperNode "
                       "authentication")
    p.add_argument("--secrets", required=True, type=Path,
                   help="the folder `tls` wrote (ca.crt, server.pem, server.key)")
    p.add_argument("--database", type=Path,
                   help="the SuperLink's state, registered keys included (default: "
                   "SECRETS/superlink-state.db)")
    p.add_argument("--host", default="0.0.0.0", help="address to listen on (default all)")
    p.set_defaults(func=_superlink)
    p = sub.add_parser("supernode", help="start this device's SuperNode")
    p.add_argument("--superlink", required=True,
                   help="the SuperLink's address as in its certificate (port optional)")
    p.add_argument("--ca", required=True, type=Path, help="the network's ca.crt")
    p.add_argument("--key", required=True, type=Path, help="this device's private key")
    p.add_argument("--data-dir", required=True, type=Path, help="this camera's node folder")
    p.add_argument("--weights-file", type=Path,
                   help="this device's own copy of the pretrained weights (else the server "
                   "sends them once)")
    p.add_argument("--port", type=int, default=9094,
                   help="local port of the SuperNode's runtime (one per SuperNode on a "
                   "machine; default 9094)")
    p.set_defaults(func=_supernode)
    p = sub.add_parser("connection", help="add a TLS connection to the SuperLink to "
                       "$FLWR_HOME/config.toml (for flwr run and flwr supernode register)")
    p.add_argument("--name", required=True, help="connection name, e.g. cameras")
    p.add_argument("--superlink", required=True,
                   help="the SuperLink's address as in its certificate (port optional)")
    p.add_argument("--ca", required=True, type=Path, help="the network's ca.crt")
    p.set_defaults(func=_connection)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except CredentialsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
