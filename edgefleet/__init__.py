"""What more than one program uses: wire stubs, PKI, signed manifests, the hash chain, channels, backoff, free
ports, atomic files, the prompt featurizer, SuperNode keys, logging setup. It imports none of edge_agent,
central, federated (tests/unit/project/test_layers.py holds it to that)."""

__version__ = "0.1.0"
