"""TLS certificates for the SuperLink and authentication keys for the SuperNodes.

``ca.crt`` (given to every device and to ``flwr``) signs ``server.pem``, the SuperLink's
certificate, whose subject alternative names must list every address devices use to reach
the SuperLink and 127.0.0.1 (the SuperLink's own runtime connects there). Each camera gets an
ECDSA P-384 key pair in OpenSSH format: the private key stays on its device, the public key is
registered with the SuperLink (``flwr supernode register``). Nothing is overwritten: a new
credential goes to a new file name, so a key in use is never lost by a rerun.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Iterable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_CERT, CA_KEY = "ca.crt", "ca.key"
SERVER_CERT, SERVER_KEY = "server.pem", "server.key"
LOOPBACK = "127.0.0.1"


class CredentialsError(ValueError):
    """Credentials that cannot be made as asked; says what and where."""


def _write(path: Path, data: bytes, private: bool) -> None:
    """A new file, never an existing one replaced; private ones readable by the owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if private else 0o644)
    except FileExistsError:
        raise CredentialsError(f"{path} exists already; credentials are never overwritten "
                               "(choose another folder, or remove the old file yourself)") from None
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def _subject_names(sans: Iterable[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for san in dict.fromkeys([LOOPBACK, *sans]):  # 127.0.0.1 first, no duplicates
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(san)))
        except ValueError:
            if not san or any(c in san for c in " /:@"):
                raise CredentialsError(
                    f"{san!r} is neither an IP address nor a host name") from None
            names.append(x509.DNSName(san))
    return names


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def make_tls(out: Path, sans: Iterable[str], days: int = 365) -> list[Path]:
    """A CA and a SuperLink certificate for ``sans`` (IP addresses or host names; 127.0.0.1
    is always added). Returns the files written."""
    if days < 1:
        raise CredentialsError(f"a certificate must be valid for at least one day, not {days}")
    names = _subject_names(sans)
    now = dt.datetime.now(dt.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dmnreid camera network CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(minutes=5))
          .not_valid_after(now + dt.timedelta(days=days))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                       False), critical=True)
          .sign(ca_key, hashes.SHA384()))
    key = ec.generate_private_key(ec.SECP384R1())
    server = (x509.CertificateBuilder()
              .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                                          "dmnreid superlink")]))
              .issuer_name(ca_name).public_key(key.public_key())
              .serial_number(x509.random_serial_number())
              .not_valid_before(now - dt.timedelta(minutes=5))
              .not_valid_after(now + dt.timedelta(days=days))
              .add_extension(x509.SubjectAlternativeName(names), critical=False)
              .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
              .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                             critical=False)
              .sign(ca_key, hashes.SHA384()))
    files = [(out / CA_CERT, ca.public_bytes(serialization.Encoding.PEM), False),
             (out / CA_KEY, _pem_key(ca_key), True),
             (out / SERVER_CERT, server.public_bytes(serialization.Encoding.PEM), False),
             (out / SERVER_KEY, _pem_key(key), True)]
    existing = [str(path) for path, _, _ in files if path.exists()]
    if existing:
        raise CredentialsError(f"{existing} exist already; credentials are never overwritten "
                               "(choose another folder)")
    for path, data, private in files:
        _write(path, data, private)
    return [path for path, _, _ in files]


def make_node_key(out: Path, name: str) -> tuple[Path, Path]:
    """An ECDSA P-384 key pair in OpenSSH format: ``<name>`` (private, stays on the device)
    and ``<name>.pub`` (registered with the SuperLink)."""
    if not name or "/" in name or name.startswith("."):
        raise CredentialsError(f"bad key name {name!r}")
    key = ec.generate_private_key(ec.SECP384R1())
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH)
    pair = (out / name, out / f"{name}.pub")
    if any(p.exists() for p in pair):
        raise CredentialsError(f"{pair[0]} or its .pub exists already; keys are never "
                               "overwritten (a registered key would be lost)")
    _write(pair[0], private, True)
    _write(pair[1], public + f" {name}\n".encode(), False)
    return pair
