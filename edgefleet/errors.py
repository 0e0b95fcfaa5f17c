"""The root of every error edgefleet's programs raise on purpose; each package's own root sits under it.

Each package draws its own tree in its errors.py, in this form: a class, the module that
defines it in parentheses, what it means. tests/unit/project/test_error_trees.py keeps the drawings true.

    EdgefleetError         (edgefleet.errors)
    ├── PkiError           (edgefleet.pki)           a certificate, key, CSR or CA fingerprint that cannot be used
    ├── ManifestError      (edgefleet.manifest)      a manifest that is malformed or whose signature does not verify
    ├── DurationError      (edgefleet.durations)     text that is not a positive duration; also a ValueError
    ├── TrustError         (edgefleet.trust)         a signing-key statement or CA bundle that does not verify
    ├── AgentError         (edge_agent.errors)       the agent's root: its tree is in edge_agent/errors.py
    ├── CentralError       (central.errors)          central's root: its tree is in central/errors.py
    └── FederatedError     (federated.errors)        federated learning's root: its tree is in federated/errors.py
"""


class EdgefleetError(Exception):
    """Root of every error raised on purpose by edgefleet/, edge_agent/, central/ and federated/."""
