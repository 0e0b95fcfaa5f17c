"""edgefleet.pki: the names on central's server certificate."""

import ipaddress

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
