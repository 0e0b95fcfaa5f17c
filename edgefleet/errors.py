"""The root of every error edgefleet's programs raise on purpose; each package's own root sits under it.

    EdgefleetError
"""


class EdgefleetError(Exception):
    """Root of every error raised on purpose by edgefleet/, edge_agent/, central/ and federated/."""
