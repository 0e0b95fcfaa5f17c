"""Federated learning's exception tree; one root, under edgefleet's, so callers can catch it whole.

Drawn in the form edgefleet/errors.py describes (a flush-left line here keeps the formatter from dedenting it):

    FederatedError         (federated.errors)
    ├── TaskError          (federated.errors)           a task cannot run on this data or configuration
    ├── FlowerControlError (federated.control)          the SuperLink's Control API refused or could not be reached
    ├── FabRefused         (federated.fast_supernode)   a run's FAB is not the code-free edgefleet FAB
    ├── SandboxUnavailable (federated.sandbox)          the kernel cannot sandbox this process
    └── VenvBuildError     (federated.supernode_runtime) `edge-agent supernode-venv` could not build the venv
"""

from edgefleet.errors import EdgefleetError


class FederatedError(EdgefleetError):
    """Root of every error federated/ raises on purpose."""


class TaskError(FederatedError):
    """The task cannot run on this data or with this configuration (the message says why)."""
