"""A central for handler tests without gRPC: a real data dir and store (SQLite, or PostgreSQL when a test asks for
it), the first admin and a viewer as the TLS layer builds their callers, and a clock the test moves."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from central import datadir
from central.datadir import Authority, initialize
from central.services import operators
from central.services.base import Caller, Central, CentralSettings
from central.store import NodeRecord, TokenRecord, open_store
from edgefleet import pki
from postgres_db import postgres_database

STORES = ["sqlite", "postgresql"]


class Clock:
    def __init__(self, now: float):
        self.now = now

    def __call__(self) -> float:
        return self.now


def caller_of(certificate_pem: str) -> Caller:
    cert = pki.load_certificate(certificate_pem)
    return Caller(pki.identity_of(cert), "test", pki.serial_hex(cert))


def central_with_callers(
    tmp_path: Path, store: str, settings: CentralSettings, now: float
) -> Iterator[tuple[Central, Caller, Caller]]:
    """(central, its first admin, a viewer named "val") on `store` ("sqlite" or "postgresql"); closed after."""
    if store == "sqlite":
        yield from _central(tmp_path, "", settings, now)
    else:
        with postgres_database() as url:
            yield from _central(tmp_path, url, settings, now)


def _central(tmp_path: Path, store_url: str, settings: CentralSettings, now: float):
    paths = initialize(tmp_path / "central", "127.0.0.1:7443", store=store_url)
    store = open_store(datadir.store_spec(paths))
    central = Central(store, Authority.load(paths), settings, "", Clock(now))
    admin = caller_of(datadir.load_credential(paths.admin_credential).certificate_pem)
    csr = pki.make_csr(pki.generate_key()).decode()
    viewer = caller_of(operators.create_operator(central, admin, "val", "viewer", 3600, csr).certificate_pem)
    try:
        yield central, admin, viewer
    finally:
        store.close()


def enroll(central: Central, node_id: str, labels: dict[str, str]) -> None:
    """A node enrolled straight through the store, with a token of its own."""
    store = central.store
    store.add_token(TokenRecord(f"t-{node_id}", "h", {}, 0.0, 1e12, 1, 1, False, "admin:a"))
    assert store.enroll(f"t-{node_id}", NodeRecord(node_id, labels, "box", 1.0, f"t-{node_id}", "ff", 2e12), 2.0)
