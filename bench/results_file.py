"""Where every benchmark writes its JSON: bench/results/<name>-<date>.json unless --out says otherwise."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import platform
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def write_results(name: str, report: dict, out: str | None) -> Path:
    path = Path(out) if out else RESULTS / f"{name}-{dt.date.today().isoformat()}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {path}")
    return path


def describe_machine(**versions: object) -> dict:
    """The machine a result was measured on (CPU model, cores, architecture, Python), plus what the benchmark
    adds: the versions of the libraries it measures, say."""
    cpu = ""
    with contextlib.suppress(OSError, StopIteration), open("/proc/cpuinfo") as cpuinfo:
        cpu = next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "arch": platform.machine(),
        "python": platform.python_version(),
        **versions,
    }
