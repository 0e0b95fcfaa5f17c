"""The agent's SuperNode: a supervised child pointed at central's SuperLink with the fleet CA.

It authenticates with the Flower key made at enrollment (fleet/flower.key) and
hands the ClientApp only the data dir, which the tasks read and never write
(federated.local_data). `supernode = "flower"` runs the stock flower-supernode;
`"fast"` runs federated.fast_supernode, the same protocol with the ClientApp
in-process and a short poll. Either runs under the interpreter federated.supernode_runtime chose:
the agent's own, or a Python 3.11+ venv beside an agent on 3.10.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from edgefleet.ports import free_port
from federated.supervisor import Supervisor, venv_env

log = logging.getLogger(__name__)

KINDS = ("flower", "fast")


def node_config(data_dir: Path) -> str:
    # Flower parses --node-config as TOML-ish key=value; the path is quoted, so quotes in it are refused.
    path = str(Path(data_dir).resolve())
    if "'" in path or '"' in path:
        raise ValueError(f"the data dir path cannot contain quotes for Flower's --node-config: {path}")
    return f"data-dir='{path}'"


def supernode_command(
    kind: str,
    superlink: str,
    ca_path: Path,
    key_path: Path,
    data_dir: Path,
    clientappio_port: int,
    python: str = sys.executable,
) -> list[str]:
    """The SuperNode's argv under ``python``; pure, so what the agent runs is unit-tested."""
    if kind not in KINDS:
        raise ValueError(f"federated.supernode must be one of {', '.join(KINDS)}, got {kind!r}")
    common = [
        "--superlink",
        superlink,
        "--root-certificates",
        str(ca_path),
        "--auth-supernode-private-key",
        str(key_path),
        "--node-config",
        node_config(data_dir),
    ]
    if kind == "fast":
        return [python, "-m", "federated.fast_supernode", *common]
    flower_supernode = str(Path(python).parent / "flower-supernode")
    return [flower_supernode, *common, "--port", str(clientappio_port), "--host", "127.0.0.1"]


def start_supernode(
    kind: str,
    superlink: str,
    ca_path: Path,
    key_path: Path,
    data_dir: Path,
    clientappio_port: int = 0,
    python: str = sys.executable,
) -> Supervisor:
    port = clientappio_port or free_port()
    command = supernode_command(kind, superlink, ca_path, key_path, data_dir, port, python)
    log_path = Path(data_dir) / "federated" / "supernode.log"
    env = venv_env(bin_dir=Path(python).parent)
    supervisor = Supervisor("supernode", lambda: command, log_path, env=env, cwd=Path(data_dir))
    supervisor.start()
    log.info("federated learning on: %s SuperNode for %s under %s (log %s)", kind, superlink, python, log_path)
    return supervisor
