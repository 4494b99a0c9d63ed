"""Deployment tools without processes: credentials, start commands for both Flower lines, and
how a node finds its pretrained weights on its own disk."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
import torch
from cryptography import x509
from cryptography.hazmat.primitives.serialization import (
    load_pem_private_key,
    load_ssh_private_key,
    load_ssh_public_key,
)

from dmnreid.deploy.cli import main as deploy_cli
from dmnreid.deploy.credentials import CredentialsError, make_node_key, make_tls
from dmnreid.deploy.processes import Ports, grpc_line, superlink_command, supernode_command
from dmnreid.node_weights import holds_weights, node_weights_file, store_weights
from dmnreid.reid.model import build_model, weights_digest
from dmnreid.reid.pretrain import torchvision_state


def test_tls_certificate_names_every_address_and_is_signed_by_the_ca(tmp_path: Path):
    make_tls(tmp_path, ["192.168.1.20", "camera-hub.local"])
    ca = x509.load_pem_x509_certificate((tmp_path / "ca.crt").read_bytes())
    server = x509.load_pem_x509_certificate((tmp_path / "server.pem").read_bytes())
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1"),
                                                          ipaddress.ip_address("192.168.1.20")]
    assert names.get_values_for_type(x509.DNSName) == ["camera-hub.local"]
    server.verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    load_pem_private_key((tmp_path / "server.key").read_bytes(), None)
    assert (tmp_path / "ca.key").stat().st_mode & 0o777 == 0o600
    with pytest.raises(CredentialsError, match="never overwritten"):
        make_tls(tmp_path, [])
    with pytest.raises(CredentialsError, match="neither an IP address nor a host name"):
        make_tls(tmp_path / "other", ["http://x"])


def test_node_keys_are_openssh_ecdsa_p384_and_never_overwritten(tmp_path: Path):
    private, public = make_node_key(tmp_path, "camera-01")
    key = load_ssh_private_key(private.read_bytes(), None)
    assert key.curve.name == "secp384r1" and private.stat().st_mode & 0o777 == 0o600
    assert load_ssh_public_key(public.read_bytes()).public_numbers() == \
        key.public_key().public_numbers()
    assert public.read_text().startswith("ecdsa-sha2-nistp384 ")
    before = private.read_bytes()
    assert deploy_cli(["keys", "--out", str(tmp_path), "--camera", "1"]) == 2
    assert private.read_bytes() == before


@pytest.mark.parametrize("version", ["1.30.0", "1.42.0"])
def test_start_commands_fit_each_flower_line(version: str, tmp_path: Path):
    grpc = grpc_line(version)
    assert grpc == (version == "1.30.0")
    link = superlink_command(tmp_path, tmp_path / "state.db", Ports.default(grpc), grpc=grpc)
    assert "--enable-supernode-auth" in link and "--insecure" not in link
    assert link[link.index("--ssl-certfile") + 1] == str(tmp_path / "server.pem")
    if grpc:
        assert link[link.index("--fleet-api-address") + 1] == "0.0.0.0:9092"
        assert link[link.index("--control-api-address") + 1] == "0.0.0.0:9093"
        assert "--port" not in link
    else:
        assert link[link.index("--port") + 1] == "8000" and "--fleet-api-address" not in link
    node = supernode_command("hub:9092", tmp_path / "ca.crt", tmp_path / "key",
                             tmp_path / "data", 9101, tmp_path / "w.pth", grpc)
    assert node[node.index("--root-certificates") + 1] == str(tmp_path / "ca.crt")
    assert node[node.index("--node-config") + 1] == \
        f"data-dir='{tmp_path / 'data'}' weights-file='{tmp_path / 'w.pth'}'"
    assert ("--clientappio-api-address" in node) == grpc and ("--port" in node) != grpc


@pytest.fixture()
def weights(tmp_path: Path) -> Path:
    path = tmp_path / "server" / "weights.pth"
    path.parent.mkdir()
    torch.save(torchvision_state(build_model("resnet18", None)), path)
    return path


def test_a_node_uses_its_own_copy_only_when_it_is_the_servers(weights: Path, tmp_path: Path):
    sha = weights_digest(weights)
    node = tmp_path / "node"
    own = {"weights-file": str(weights)}
    assert holds_weights(node, own, sha) and node_weights_file(node, own, sha) == weights
    other = tmp_path / "other.pth"
    torch.save(torchvision_state(build_model("resnet18", None, 3)), other)
    other.write_bytes(other.read_bytes() + b"\0")
    with pytest.raises(ValueError, match=r"node config weights-file .*other\.pth has sha256"):
        holds_weights(node, {"weights-file": str(other)}, sha)
    with pytest.raises(FileNotFoundError, match="no such file on this node"):
        holds_weights(node, {"weights-file": str(tmp_path / "gone.pth")}, sha)


def test_weights_sent_by_the_server_are_kept_by_sha256(weights: Path, tmp_path: Path):
    sha = weights_digest(weights)
    node = tmp_path / "node"
    assert not holds_weights(node, {}, sha)
    with pytest.raises(FileNotFoundError, match=r"query\.pretrained message did not reach"):
        node_weights_file(node, {}, sha)
    store_weights(node, sha, torch.load(weights, weights_only=True))
    assert holds_weights(node, {}, sha)
    stored = node_weights_file(node, {}, sha)
    assert stored == node / "pretrained" / f"{sha}.pt"
    model = build_model("resnet18", stored)  # builds the very same stem
    reference = build_model("resnet18", weights)
    assert all(torch.equal(v, reference.state_dict()[k]) for k, v in model.state_dict().items())
    assert node_weights_file(node, {}, "") is None
    with pytest.raises(ValueError, match="not a sha256"):
        node_weights_file(node, {}, "../../etc/passwd")
