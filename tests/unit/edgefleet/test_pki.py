"""edgefleet.pki: identities in certificates, fingerprints, renewal, and the names on central's server certificate."""

import datetime as dt
import ipaddress

import pytest
from cryptography import x509

from edgefleet import pki


def test_server_certificate_extra_names_become_dns_and_ip_sans():
    ca_key, ca = pki.create_ca()
    key = pki.generate_key()
    cert = pki.issue_server_certificate(
        ca_key,
        ca,
        key.public_key(),
        extra_names=["central.edgefleet", "localhost", "127.0.0.1", "::1", "fl.example.org", "10.1.2.3"],
    )
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    dns = san.get_values_for_type(x509.DNSName)
    assert dns == ["central.edgefleet", "localhost", "fl.example.org"]
    assert dns.count("central.edgefleet") == 1
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
        ipaddress.ip_address("10.1.2.3"),
    ]
    assert all(isinstance(name, (x509.DNSName, x509.IPAddress)) for name in san)
    plain = pki.issue_server_certificate(ca_key, ca, key.public_key())
    assert plain.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName
    ) == ["central.edgefleet"]


def test_identity_uris():
    assert pki.parse_identity_uri("spiffe://edgefleet/node/node-1") == pki.Identity("node", "node-1")
    assert pki.Identity("admin", "ops").uri == "spiffe://edgefleet/admin/ops"
    for bad in (
        "spiffe://other/node/x",
        "spiffe://edgefleet/root/x",
        "spiffe://edgefleet/node/",
        "spiffe://edgefleet/node/a/b",
        "https://edgefleet/node/x",
    ):
        assert pki.parse_identity_uri(bad) is None


def test_certificates_carry_the_identity_and_fingerprints_normalize():
    ca_key, ca = pki.create_ca()
    key = pki.generate_key()
    now = pki.utcnow()
    cert = pki.issue_certificate(
        ca_key, ca, key.public_key(), pki.Identity("node", "n1"), not_before=now, not_after=now + dt.timedelta(days=30)
    )
    assert pki.identity_of(cert) == pki.Identity("node", "n1")
    fp = pki.fingerprint(ca)
    colons = "SHA256:" + ":".join(fp[7:][i : i + 2].upper() for i in range(0, 64, 2))
    assert pki.normalize_fingerprint(colons) == fp
    for bad in ("md5:abc", "sha256:xyz", fp[:-2]):
        with pytest.raises(pki.PkiError):
            pki.normalize_fingerprint(bad)
    assert pki.public_key_from_csr(pki.make_csr(key)).public_numbers() == key.public_key().public_numbers()


def test_renewal_is_due_at_two_thirds_of_the_lifetime():
    start = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    end = start + dt.timedelta(days=30)
    assert not pki.renewal_due(start, end, start + dt.timedelta(days=19))
    assert pki.renewal_due(start, end, start + dt.timedelta(days=20))
