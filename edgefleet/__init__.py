"""What the agent and the coordinator share: wire stubs, PKI, signed manifests, the hash chain, channels, backoff."""

__version__ = "0.1.0"
