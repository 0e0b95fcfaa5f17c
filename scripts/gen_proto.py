"""Generate the Python stubs in edgefleet/v1/ from proto/edgefleet/v1/*.proto.

Run `make proto` after changing a .proto; tests/unit/project/test_proto_drift.py runs
the same generation into a temporary directory and fails if the committed
stubs differ.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
PACKAGE = "edgefleet/v1"


def generate(out_dir: Path) -> list[Path]:
    """Write *_pb2.py, *_pb2.pyi and *_pb2_grpc.py for every .proto into out_dir/edgefleet/v1/."""
    import grpc_tools
    from grpc_tools import protoc

    sources = sorted((PROTO_ROOT / PACKAGE).glob("*.proto"))
    (out_dir / PACKAGE).mkdir(parents=True, exist_ok=True)
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *(str(p.relative_to(PROTO_ROOT)) for p in sources),
    ]
    # protoc resolves the relative source names against -I, not the cwd.
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed; see the messages above")
    return sorted((out_dir / PACKAGE).glob("*_pb2*.py*"))


def main() -> int:
    for path in generate(ROOT):
        print(path.relative_to(ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
