"""The Flower App Bundle central sends with every run: configuration only, no code.

The ServerApp and ClientApp live in the installed `federated` package on both
sides (one flwr version, pinned in pyproject.toml); the FAB names them and
carries the run-config defaults. Agents refuse a FAB that carries code (see
federated.supernode), so a run can never ship new code to the boxes.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache

APP_NAME = "edgefleet-federated"
APP_VERSION = "1.0.0"
SERVER_APP = "federated.flower_app:server_app"
CLIENT_APP = "federated.flower_app:client_app"

# Every key a run may set; `edgefleet fl start` overrides them per run.
DEFAULT_RUN_CONFIG: dict[str, object] = {
    "task": "sensitivity",
    "rounds": 3,
    "min-nodes": 2,
    "secagg": True,
    "secagg-shares": 0,  # 0: every node holds a share of every other's secret
    "secagg-threshold": 0,  # 0: two thirds of the nodes, at least 2
    "clip": 0.0,  # 0: no differential privacy
    "noise": 0.0,
    "timeout-s": 60.0,  # how long the ServerApp waits for replies in each stage
    "wait-nodes-s": 120.0,  # how long it waits for min-nodes to connect
    "local-epochs": 20,
    "learning-rate": 2.0,
    "l2": 0.0001,
    "usage-scale": 100000.0,
    "results-dir": "",
    "record-received": False,
}


def pyproject() -> dict:
    return {
        "build-system": {"requires": ["hatchling"], "build-backend": "hatchling.build"},
        "project": {"name": APP_NAME, "version": APP_VERSION, "dependencies": []},
        "tool": {
            "flwr": {
                "app": {
                    "publisher": "edgefleet",
                    "components": {"serverapp": SERVER_APP, "clientapp": CLIENT_APP},
                    "config": DEFAULT_RUN_CONFIG,
                }
            }
        },
    }


@lru_cache(maxsize=1)
def build() -> tuple[bytes, str]:
    """The FAB's bytes and sha256 hex."""
    import tomli_w  # flwr's dependency, like flwr itself only on Python 3.11+
    from flwr.cli.build import build_fab_from_files

    fab, _ = build_fab_from_files({"pyproject.toml": tomli_w.dumps(pyproject()).encode()})
    return fab, hashlib.sha256(fab).hexdigest()
