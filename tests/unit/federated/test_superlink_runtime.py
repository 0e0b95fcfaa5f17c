"""federated.superlink_runtime: the SuperLink's SuperExec and ServerApp present its Runtime certificate."""

import ssl
import sys

import pytest

from federated import superlink_runtime
from federated.superlink_credentials import ClientAuthority
from federated.superlink_guard import CONTROL_IDENTITY, RUNTIME_IDENTITY, identity_from_peercert


def test_flwr_serverapp_is_started_through_the_shim_and_nothing_else_is():
    assert superlink_runtime.serverapp_command(["flwr-serverapp", "--token", "t"]) == [
        sys.executable, "-m", "federated.superlink_runtime", "serverapp", "--token", "t",
    ]  # fmt: skip
    assert superlink_runtime.serverapp_command(["/venv/bin/flwr-serverapp"])[3] == "serverapp"
    assert superlink_runtime.serverapp_command(["flwr-clientapp", "x"]) == ["flwr-clientapp", "x"]


def test_client_tls_context_presents_the_certificate(tmp_path):
    authority = ClientAuthority.create()
    cert, key = authority.issue_runtime(tmp_path)
    ca = authority.write_certificate(tmp_path / "ca.crt")
    context = superlink_runtime.client_tls_context(str(ca), str(cert), str(key))
    assert isinstance(context, ssl.SSLContext) and context.verify_mode == ssl.CERT_REQUIRED
    existing = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    assert superlink_runtime.client_tls_context(existing, str(cert), str(key)) is existing
    with pytest.raises(ValueError, match="TLS only"):
        superlink_runtime.client_tls_context(False, str(cert), str(key))


def test_the_authority_issues_the_two_identities_with_private_keys(tmp_path):
    from cryptography import x509

    authority = ClientAuthority.create()
    for issue, identity in ((authority.issue_control, CONTROL_IDENTITY), (authority.issue_runtime, RUNTIME_IDENTITY)):
        cert_path, key_path = issue(tmp_path)
        assert key_path.stat().st_mode & 0o777 == 0o600
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        uris = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert uris.get_values_for_type(x509.UniformResourceIdentifier) == [identity]
        assert cert.issuer == authority.certificate.subject
        peercert = {
            "subjectAltName": tuple(("URI", u) for u in uris.get_values_for_type(x509.UniformResourceIdentifier))
        }
        assert identity_from_peercert(peercert) == identity


def test_main_refuses_without_its_certificate(monkeypatch):
    monkeypatch.delenv(superlink_runtime.CERT_ENV, raising=False)
    with pytest.raises(SystemExit, match="EDGEFLEET_RUNTIME_CERT is not set"):
        superlink_runtime.main(["serverapp"])
    with pytest.raises(SystemExit, match="usage"):
        superlink_runtime.main(["clientapp"])
