"""What a run leaves in central's results dir, written by the ServerApp, read by central.

`run-<id>.json` is the run's status as the ServerApp sees it (status, rounds
done with their times, each node's error, the outcome); it is rewritten
atomically at every step so `edgefleet fl status` can follow a run live.
Beside it: `run-<id>.onnx` (a model outcome), `run-<id>-aggregate.npz` (the
final global arrays) and, only when asked, `run-<id>-received.npz` (what the
ServerApp received: masked vectors).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgefleet.atomicfile import write_public

TERMINAL = ("completed", "failed")


def report_path(results_dir: Path, run_id: int) -> Path:
    return Path(results_dir) / f"run-{run_id}.json"


def onnx_path(results_dir: Path, run_id: int) -> Path:
    return Path(results_dir) / f"run-{run_id}.onnx"


def aggregate_path(results_dir: Path, run_id: int) -> Path:
    return Path(results_dir) / f"run-{run_id}-aggregate.npz"


def received_path(results_dir: Path, run_id: int) -> Path:
    return Path(results_dir) / f"run-{run_id}-received.npz"


def read_report(results_dir: Path, run_id: int) -> dict | None:
    try:
        return json.loads(report_path(results_dir, run_id).read_text())
    except FileNotFoundError:
        return None


class RunReport:
    def __init__(self, results_dir: Path, run_id: int, config: dict):
        self.results_dir, self.run_id = Path(results_dir), run_id
        # The run's JSON document, as written to report_path.
        self.state: dict[str, Any] = {
            "run_id": run_id,
            "task": config.get("task"),
            "status": "starting",
            "started_at": time.time(),
            "rounds": [],
            "node_errors": {},
            "error": None,
        }
        self._save()

    @property
    def rounds(self) -> list:
        return self.state["rounds"]

    def update(self, **fields) -> None:
        self.state.update(fields)
        self._save()

    def round_done(self, number: int, seconds: float) -> None:
        self.state["rounds"].append({"round": number, "seconds": round(seconds, 3)})
        self._save()

    def fail(self, message: str) -> None:
        self.update(status="failed", error=message, finished_at=time.time())

    def complete(self, outcome: dict, arrays: list[np.ndarray], *, rounds: int, node_errors: dict) -> None:
        np.savez(aggregate_path(self.results_dir, self.run_id), *arrays)
        summary = {k: v for k, v in outcome.items() if k not in ("onnx", "weights", "bias")}
        if outcome.get("kind") == "onnx":
            write_public(onnx_path(self.results_dir, self.run_id), outcome["onnx"])
            summary["onnx"] = onnx_path(self.results_dir, self.run_id).name
        self.update(
            status="completed",
            outcome=summary,
            finished_at=time.time(),
            node_errors={str(k): v for k, v in node_errors.items()},
        )

    def save_received(self, received: list[dict]) -> None:
        flat = {
            f"exchange{item['exchange']}_node{item['node']}_array{i}": array
            for item in received
            for i, array in enumerate(item["arrays"])
        }
        np.savez(received_path(self.results_dir, self.run_id), **flat)

    def _save(self) -> None:
        write_public(report_path(self.results_dir, self.run_id), json.dumps(self.state, indent=2, default=str).encode())
