"""What the agent and the coordinator share (wire stubs, PKI, manifests arrive with later issues)."""

__version__ = "0.1.0"
