"""edgefleet.trust: signing-key statements walked from the keys a node trusts, and CA bundles accepted only
through cross certificates. Each refusal test says what was tried."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from edgefleet import manifest, pki
from edgefleet.trust import (
    SigningStatement,
    TrustedKey,
    TrustError,
    accept_ca_bundle,
    cross_sign,
    key_id,
    parse_statement,
    read_statement,
    sign_statement,
    walk_signing_keys,
)

T0 = 1_800_000_000.0
DAY = 86_400.0


def _key():
    private = pki.generate_signing_key()
    return private, pki.public_key_pem(private)


def _trusted(public_pem: bytes, valid_until: float | None = None) -> TrustedKey:
    return TrustedKey(key_id(public_pem), public_pem, valid_until)


def _rotate(old_private, old_pem, new_pem, issued_at=T0, overlap=DAY):
    statement = SigningStatement(
        kind="rotate",
        key_id=key_id(new_pem),
        previous_key_id=key_id(old_pem),
        issued_at=issued_at,
        previous_valid_until=issued_at + overlap,
        public_key_pem=new_pem.decode(),
    )
    return sign_statement(statement, old_private)


def _retire(current_private, current_pem, old_pem, issued_at):
    statement = SigningStatement(
        kind="retire",
        key_id=key_id(current_pem),
        previous_key_id=key_id(old_pem),
        issued_at=issued_at,
        previous_valid_until=issued_at,
    )
    return sign_statement(statement, current_private)


def _ids(keys):
    return [(key.key_id, key.valid_until) for key in keys]


# --- key ids and statements -------------------------------------------------------


def test_key_id_is_the_sha256_of_the_spki_and_stable():
    _, pem = _key()
    assert key_id(pem).startswith("ed25519:") and len(key_id(pem)) == len("ed25519:") + 64
    assert key_id(pem) == key_id(pem)
    with pytest.raises(TrustError, match="Ed25519"):
        key_id(pki.public_key_pem(pki.generate_key()))  # an EC key is not a signing key
    with pytest.raises(TrustError, match="not a PEM public key"):
        key_id(b"garbage")


def test_statement_round_trip_and_canonical_body():
    old, old_pem = _key()
    _, new_pem = _key()
    body, signature = _rotate(old, old_pem, new_pem)
    statement = parse_statement(body, signature, old_pem)
    assert statement.kind == "rotate" and statement.key_id == key_id(new_pem)
    assert statement.signer_key_id == key_id(old_pem)
    assert read_statement(body) == statement
    # The same content, pretty-printed, is not the signed form.
    pretty = body.decode().replace(",", ", ").encode()
    with pytest.raises(TrustError, match="canonical"):
        read_statement(pretty)


def test_a_forged_statement_is_refused():
    old, old_pem = _key()
    attacker, _ = _key()
    _, new_pem = _key()
    statement = SigningStatement("rotate", key_id(new_pem), key_id(old_pem), T0, T0 + DAY, new_pem.decode())
    body = statement.canonical()
    # Signed by an attacker's key but naming the trusted key as signer.
    forged = base64.b64encode(attacker.sign(body)).decode()
    with pytest.raises(TrustError, match="is not signed by"):
        parse_statement(body, forged, old_pem)
    with pytest.raises(TrustError, match="is not signed by"):
        walk_signing_keys([_trusted(old_pem)], [(body, forged)], T0)
    # A real signature over other bytes (overlap stretched by a year after signing).
    real_body, real_signature = _rotate(old, old_pem, new_pem)
    stretched = dataclasses.replace(read_statement(real_body), previous_valid_until=T0 + 365 * DAY).canonical()
    with pytest.raises(TrustError, match="is not signed by"):
        walk_signing_keys([_trusted(old_pem)], [(stretched, real_signature)], T0)


def test_signing_with_a_key_other_than_the_named_signer_is_refused():
    old, old_pem = _key()
    other, other_pem = _key()
    _, new_pem = _key()
    statement = SigningStatement("rotate", key_id(new_pem), key_id(old_pem), T0, T0 + DAY, new_pem.decode())
    with pytest.raises(TrustError, match="signed by"):
        sign_statement(statement, other)  # the signer must be the statement's previous key
    body, signature = _rotate(old, old_pem, new_pem)
    with pytest.raises(TrustError, match="names another signer"):
        parse_statement(body, signature, other_pem)  # checked against a key it does not name


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"kind": "promote"}, "kind"),
        ({"key_id": "rsa:00"}, "key_id"),
        ({"previous_key_id": ""}, "previous_key_id"),
        ({"issued_at": "yesterday"}, "issued_at"),
        ({"previous_valid_until": -1}, "previous_valid_until"),
        ({"public_key_pem": ""}, "not a PEM public key"),
    ],
)
def test_malformed_statements_say_which_field(change, reason):
    _, old_pem = _key()
    _, new_pem = _key()
    statement = SigningStatement("rotate", key_id(new_pem), key_id(old_pem), T0, T0 + DAY, new_pem.decode())
    body = dataclasses.replace(statement, **change).canonical()
    with pytest.raises(TrustError, match=reason):
        read_statement(body)


def test_a_rotate_whose_public_key_is_not_its_key_id_and_other_bad_bodies_are_refused():
    _, old_pem = _key()
    _, new_pem = _key()
    _, third_pem = _key()
    swapped = SigningStatement("rotate", key_id(new_pem), key_id(old_pem), T0, T0 + DAY, third_pem.decode())
    with pytest.raises(TrustError, match="public key is not"):
        read_statement(swapped.canonical())
    with pytest.raises(TrustError, match="malformed"):
        read_statement(b"not json")
    with pytest.raises(TrustError, match="malformed"):
        read_statement(b'{"kind": "rotate"}')  # fields missing
    with pytest.raises(TrustError, match="bytes is over"):
        read_statement(b" " * 10_000)
    retire_with_key = SigningStatement("retire", key_id(new_pem), key_id(old_pem), T0, T0, new_pem.decode())
    with pytest.raises(TrustError, match="retire statement carries no public key"):
        read_statement(retire_with_key.canonical())


# --- walking the chain -----------------------------------------------------------


def test_a_rotation_then_retirement_moves_trust_to_the_new_key():
    a, a_pem = _key()
    b, b_pem = _key()
    rotate = _rotate(a, a_pem, b_pem)
    during = walk_signing_keys([_trusted(a_pem)], [rotate], T0 + 1)
    assert _ids(during) == [(key_id(a_pem), T0 + DAY), (key_id(b_pem), None)]
    retire = _retire(b, b_pem, a_pem, T0 + 3600)
    # Applied again with the whole chain, as every heartbeat bundle carries it: idempotent.
    after = walk_signing_keys(during, [rotate, retire], T0 + 3601)
    assert _ids(after) == [(key_id(b_pem), None)]


def test_an_overlap_that_ended_drops_the_old_key_without_a_retirement():
    a, a_pem = _key()
    _, b_pem = _key()
    keys = walk_signing_keys([_trusted(a_pem)], [_rotate(a, a_pem, b_pem)], T0 + DAY + 1)
    assert _ids(keys) == [(key_id(b_pem), None)]


def test_a_node_offline_through_two_rotations_catches_up_from_its_oldest_key():
    a, a_pem = _key()
    b, b_pem = _key()
    _, c_pem = _key()
    chain = [
        _rotate(a, a_pem, b_pem, T0),
        _retire(b, b_pem, a_pem, T0 + 10),
        _rotate(b, b_pem, c_pem, T0 + 20),
    ]
    keys = walk_signing_keys([_trusted(a_pem)], chain, T0 + 30)
    assert _ids(keys) == [(key_id(b_pem), T0 + 20 + DAY), (key_id(c_pem), None)]
    # A node that already dropped a and b skips the statements they signed.
    assert _ids(walk_signing_keys([_trusted(c_pem)], chain, T0 + 30)) == [(key_id(c_pem), None)]


def test_statements_from_unknown_keys_are_skipped_not_trusted():
    _, a_pem = _key()
    stranger, stranger_pem = _key()
    _, evil_pem = _key()
    keys = walk_signing_keys([_trusted(a_pem)], [_rotate(stranger, stranger_pem, evil_pem)], T0)
    assert _ids(keys) == [(key_id(a_pem), None)]


def test_a_fork_is_refused():
    a, a_pem = _key()
    _, b_pem = _key()
    _, x_pem = _key()
    # Two successors of a in one chain.
    with pytest.raises(TrustError, match="two successors"):
        walk_signing_keys([_trusted(a_pem)], [_rotate(a, a_pem, b_pem), _rotate(a, a_pem, x_pem)], T0)
    # A node that already moved to b is sent a chain with only a -> x (a's leaked key, during the overlap).
    during = walk_signing_keys([_trusted(a_pem)], [_rotate(a, a_pem, b_pem)], T0)
    with pytest.raises(TrustError, match="already succeeded"):
        walk_signing_keys(during, [_rotate(a, a_pem, x_pem, T0 + 5)], T0 + 10)


def test_a_replayed_statement_changes_nothing():
    a, a_pem = _key()
    b, b_pem = _key()
    rotate = _rotate(a, a_pem, b_pem)
    retire = _retire(b, b_pem, a_pem, T0 + 10)
    after = walk_signing_keys([_trusted(a_pem)], [rotate, retire], T0 + 20)
    # Replaying the old rotation (alone, or twice) does not bring a back.
    assert _ids(walk_signing_keys(after, [rotate, rotate], T0 + 30)) == [(key_id(b_pem), None)]
    assert _ids(walk_signing_keys(after, [retire, retire], T0 + 30)) == [(key_id(b_pem), None)]


def test_an_old_key_cannot_retire_the_new_one():
    a, a_pem = _key()
    _, b_pem = _key()
    during = walk_signing_keys([_trusted(a_pem)], [_rotate(a, a_pem, b_pem)], T0)
    # a's key (valid during the overlap) signs "b is retired".
    with pytest.raises(TrustError, match="not the newest"):
        walk_signing_keys(during, [_retire(a, a_pem, b_pem, T0 + 5)], T0 + 6)


def test_the_trusted_set_is_never_empty():
    _, a_pem = _key()
    keys = walk_signing_keys([_trusted(a_pem, valid_until=T0)], [], T0 + DAY)
    assert _ids(keys) == [(key_id(a_pem), T0)]
    with pytest.raises(TrustError, match="no signing key is trusted"):
        walk_signing_keys([], [], T0)


# --- manifests signed by any trusted key --------------------------------------------


def test_verify_any_accepts_a_manifest_from_any_trusted_key_only():
    a, a_pem = _key()
    b, b_pem = _key()
    _, c_pem = _key()
    model = manifest.Manifest(name="chat", version="1.0.0", format="gguf", sha256="ab" * 32, size=3)
    body, signature = manifest.sign(model, b)
    assert manifest.verify_any(body, signature, [a_pem, b_pem]) == model
    with pytest.raises(manifest.ManifestError, match="any of central's 2 trusted signing keys"):
        manifest.verify_any(body, signature, [a_pem, c_pem])
    with pytest.raises(manifest.ManifestError, match="central's signing key"):
        manifest.verify(body, signature, a_pem)
    with pytest.raises(manifest.ManifestError, match="no signing key is trusted"):
        manifest.verify_any(body, signature, [])
    with pytest.raises(manifest.ManifestError, match="cannot be checked"):
        manifest.verify_any(body, "not base64!", [b_pem])
    del a


# --- CAs ---------------------------------------------------------------------------


def _ca(name):
    return pki.create_ca(name)


def _node_cert(ca_key, ca_cert):
    key = pki.generate_key()
    now = pki.utcnow()
    return pki.issue_certificate(
        ca_key,
        ca_cert,
        key.public_key(),
        pki.Identity("node", "n1"),
        not_before=now - dt.timedelta(minutes=1),
        not_after=now + dt.timedelta(days=1),
    )


def test_cross_certificate_carries_the_new_ca_and_is_issued_by_the_old():
    old_key, old = _ca("edgefleet fleet CA")
    _, new = _ca("edgefleet fleet CA 2026-12-05T17:40Z")
    cross = cross_sign(old_key, old, new)
    assert cross.subject == new.subject and cross.issuer == old.subject
    assert cross.public_key() == new.public_key()
    cross.verify_directly_issued_by(old)
    with pytest.raises(TrustError, match="subject of its own"):
        cross_sign(old_key, old, _ca("edgefleet fleet CA")[1])


def test_a_new_ca_is_accepted_through_a_cross_certificate_and_the_old_dropped_once_renewed():
    old_key, old = _ca("edgefleet fleet CA")
    new_key, new = _ca("edgefleet fleet CA 2")
    cross = cross_sign(old_key, old, new)
    on_old = _node_cert(old_key, old)
    during = accept_ca_bundle([old], [new, old], [cross], on_old)
    assert during == [new, old]
    # Central stops listing the old CA; the node still holds an old-CA certificate: it keeps the old CA.
    assert accept_ca_bundle(during, [new], [], on_old) == [new, old]
    # Once renewed onto the new CA, the old one goes.
    assert accept_ca_bundle(during, [new], [], _node_cert(new_key, new)) == [new]


def test_a_ca_offered_without_a_cross_certificate_is_refused():
    _, old = _ca("edgefleet fleet CA")
    _, new = _ca("edgefleet fleet CA 2")
    with pytest.raises(TrustError, match="no cross certificate from a trusted CA"):
        accept_ca_bundle([old], [new, old], [], None)


def test_a_cross_certificate_from_an_untrusted_ca_is_refused():
    _, old = _ca("edgefleet fleet CA")
    attacker_key, attacker = _ca("edgefleet fleet CA")  # same name as ours, other key
    _, new = _ca("edgefleet fleet CA 2")
    cross = cross_sign(attacker_key, attacker, new)
    with pytest.raises(TrustError, match="no cross certificate from a trusted CA"):
        accept_ca_bundle([old], [new], [cross], None)


def test_a_cross_certificate_for_another_key_does_not_vouch():
    old_key, old = _ca("edgefleet fleet CA")
    _, new = _ca("edgefleet fleet CA 2")
    _, impostor = _ca("edgefleet fleet CA 2")  # the subject central names, someone else's key
    cross = cross_sign(old_key, old, new)
    with pytest.raises(TrustError, match="no cross certificate"):
        accept_ca_bundle([old], [impostor], [cross], None)


def test_a_leaf_offered_as_a_ca_is_refused():
    old_key, old = _ca("edgefleet fleet CA")
    with pytest.raises(TrustError, match="not a self-signed CA"):
        accept_ca_bundle([old], [_node_cert(old_key, old)], [], None)


def test_a_chain_of_two_rotations_is_accepted_in_one_bundle():
    k1, ca1 = _ca("edgefleet fleet CA")
    k2, ca2 = _ca("edgefleet fleet CA 2")
    _, ca3 = _ca("edgefleet fleet CA 3")
    crosses = [cross_sign(k2, ca2, ca3), cross_sign(k1, ca1, ca2)]
    assert accept_ca_bundle([ca1], [ca3, ca2], crosses, None) == [ca3, ca2, ca1]


def test_the_ca_set_is_never_empty():
    _, old = _ca("edgefleet fleet CA")
    assert accept_ca_bundle([old], [], [], None) == [old]
    with pytest.raises(TrustError, match="no CA is trusted"):
        accept_ca_bundle([], [old], [], None)


def _self_signed_ca_on(key, subject, key_usage: bool = True):
    """A self-signed CA certificate on `key` under `subject`: what an attacker holding some key makes."""
    now = pki.utcnow()
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
    )
    if key_usage:
        builder = builder.add_extension(_key_usage(key_cert_sign=True), critical=True)
    return builder.sign(key, hashes.SHA256())


def _key_usage(key_cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not key_cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=key_cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def test_a_node_certificate_does_not_vouch_for_a_ca_made_on_its_key():
    # Tried: a node turns its own certificate (from the trusted CA: the right subject and key, the trusted
    # issuer's signature, but CA:FALSE) into a "cross certificate" for a CA it self-signs with its node key.
    old_key, old = _ca("edgefleet fleet CA")
    node_key = pki.generate_key()
    now = pki.utcnow()
    leaf = pki.issue_certificate(
        old_key,
        old,
        node_key.public_key(),
        pki.Identity("node", "n1"),
        not_before=now - dt.timedelta(minutes=1),
        not_after=now + dt.timedelta(days=1),
    )
    rogue = _self_signed_ca_on(node_key, leaf.subject)
    with pytest.raises(TrustError, match="no cross certificate from a trusted CA"):
        accept_ca_bundle([old], [rogue, old], [leaf], leaf)


def test_a_cross_certificate_without_certificate_signing_does_not_vouch():
    # Tried: cross certificates that are CAs by BasicConstraints but whose key usage forbids signing certificates,
    # or say nothing of it; and an offered CA whose own key usage forbids it.
    old_key, old = _ca("edgefleet fleet CA")
    new_key, new = _ca("edgefleet fleet CA 2")
    for usage in (_key_usage(key_cert_sign=False), None):
        builder = (
            x509.CertificateBuilder()
            .subject_name(new.subject)
            .issuer_name(old.subject)
            .public_key(new.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(new.not_valid_before_utc)
            .not_valid_after(new.not_valid_after_utc)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        )
        if usage is not None:
            builder = builder.add_extension(usage, critical=True)
        cross = builder.sign(old_key, hashes.SHA256())
        with pytest.raises(TrustError, match="no cross certificate from a trusted CA"):
            accept_ca_bundle([old], [new, old], [cross], None)
    no_signing = _self_signed_ca_on(new_key, new.subject, key_usage=False)
    with pytest.raises(TrustError, match="not a self-signed CA"):
        accept_ca_bundle([old], [no_signing, old], [cross_sign(old_key, old, no_signing)], None)
