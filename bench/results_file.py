"""Where every benchmark writes its JSON: bench/results/<name>-<date>.json unless --out says otherwise."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def write_results(name: str, report: dict, out: str | None) -> Path:
    path = Path(out) if out else RESULTS / f"{name}-{dt.date.today().isoformat()}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {path}")
    return path
