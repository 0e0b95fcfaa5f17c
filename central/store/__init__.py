"""Central's store: nodes, bootstrap tokens, models, rollouts, reports, routing totals and the audit log.

:class:`FleetStore` (``records``) is the contract, with the records it keeps;
:class:`SqliteFleetStore` (``sqlite``) implements it on one SQLite file. A
PostgreSQL store for several coordinator replicas implements the same
contract and runs the same test suite (tests/unit/central/test_store.py). Handlers
and servicers never see SQL.
"""

from central.store.records import (
    DesiredState,
    FederatedRunRecord,
    FleetStore,
    FlowerKeyRecord,
    ModelRecord,
    NodeHealth,
    NodeRecord,
    NodeRoutingRecord,
    ReportRecord,
    StoreError,
    TokenRecord,
)
from central.store.sqlite import SqliteFleetStore

__all__ = [
    "DesiredState",
    "FederatedRunRecord",
    "FleetStore",
    "FlowerKeyRecord",
    "ModelRecord",
    "NodeHealth",
    "NodeRecord",
    "NodeRoutingRecord",
    "ReportRecord",
    "SqliteFleetStore",
    "StoreError",
    "TokenRecord",
]
