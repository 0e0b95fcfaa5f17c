"""``edgefleet``: the operator's CLI for central.

Only ``--version`` exists yet; the coordinator's commands (``central init``,
``token create``, ``nodes``...) arrive with the coordinator (issue 3).
"""

from __future__ import annotations

import argparse
import sys

from edgefleet import __version__


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="edgefleet", description="operate an edgefleet fleet through central")
    parser.add_argument("--version", action="version", version=f"edgefleet {__version__}")
    parser.parse_args(argv)
    parser.print_help()
    print("\nedgefleet: no commands yet; the coordinator's commands arrive with it", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
