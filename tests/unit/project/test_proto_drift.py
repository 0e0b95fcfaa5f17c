"""The committed stubs in edgefleet/v1/ are exactly what `make proto` generates."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def _load_generator():
    spec = importlib.util.spec_from_file_location("gen_proto", ROOT / "scripts" / "gen_proto.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_stubs_match_the_protos(tmp_path):
    generated = _load_generator().generate(tmp_path)
    assert generated, "no stubs were generated"
    names = {p.name for p in generated}
    committed = {p.name for p in (ROOT / "edgefleet" / "v1").glob("*_pb2*.py*")}
    assert names == committed, f"run `make proto`: stubs differ in files {sorted(names ^ committed)}"
    for path in generated:
        ours = (ROOT / "edgefleet" / "v1" / path.name).read_text()
        assert path.read_text() == ours, f"edgefleet/v1/{path.name} is out of date with proto/: run `make proto`"
