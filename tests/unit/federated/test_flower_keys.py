"""Flower node keys: the agent's generated key (edgefleet.nodekeys) and the SuperLink's form of it
(federated.control)."""

import importlib.util

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from edgefleet.nodekeys import generate_node_key
from federated import control

# flwr 1.42 installs on Python 3.11+ only; on 3.10 (JetPack 6) federated learning is off and these cannot run.
needs_flwr = pytest.mark.skipif(
    importlib.util.find_spec("flwr") is None, reason="flwr 1.42 needs Python 3.11+; federated learning is off here"
)


def _ed25519_openssh() -> bytes:
    return (
        ed25519.Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    )


def test_generate_node_key_is_openssh_p384():
    private, public = generate_node_key()
    assert private.startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----")
    key = serialization.load_ssh_private_key(private, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp384r1"
    assert public.startswith(b"ecdsa-sha2-nistp384 ")
    assert serialization.load_ssh_public_key(public).public_numbers() == key.public_key().public_numbers()


@needs_flwr
def test_public_key_bytes_accepts_p384_and_refuses_others():
    _, public = generate_node_key()
    stored = control.public_key_bytes(public.decode() + "\n")
    from flwr.supercore.primitives.asymmetric import bytes_to_public_key

    assert bytes_to_public_key(stored).public_numbers() == serialization.load_ssh_public_key(public).public_numbers()
    assert control.public_key_bytes(public) == stored
    with pytest.raises(control.FlowerControlError, match="ECDSA key on a NIST curve"):
        control.public_key_bytes(_ed25519_openssh())
    for garbage in (b"garbage", "ecdsa-sha2-nistp384 AAAA!!!", b""):
        with pytest.raises(control.FlowerControlError, match="not an OpenSSH public key"):
            control.public_key_bytes(garbage)


@pytest.mark.parametrize("line", ["not a key", "foo AAAAB3NzaC1yc2E="])
def test_public_key_bytes_refuses_unknown_key_type_with_flower_control_error(line):
    """A line whose first word is no SSH key type: today cryptography's UnsupportedAlgorithm escapes."""
    with pytest.raises(control.FlowerControlError, match="not an OpenSSH public key"):
        control.public_key_bytes(line)
