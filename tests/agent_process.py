"""Runs a real ``edge-agent serve`` process for a test, and stops it by its pid."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

STARTUP_TIMEOUT_S = 120


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, list)):
        return json.dumps(value)
    return repr(value)


def write_config(
    path: Path, sections: dict[str, dict[str, Any] | list[dict[str, Any]]], top: dict[str, Any] | None = None
) -> Path:
    """A section given as a list of tables is written as an array of tables ([[upstreams]])."""
    lines = [f"{k} = {toml_value(v)}" for k, v in (top or {}).items()]
    for name, values in sections.items():
        for table in values if isinstance(values, list) else [values]:
            lines.append(f"[[{name}]]" if isinstance(values, list) else f"[{name}]")
            lines.extend(f"{k} = {toml_value(v)}" for k, v in table.items())
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass
class AgentProcess:
    proc: subprocess.Popen
    data_dir: Path
    log_path: Path
    base_url: str = ""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def client(self, **kwargs):
        import openai

        return openai.OpenAI(base_url=self.base_url + "/v1", api_key="not-needed", max_retries=0, **kwargs)

    def metrics(self) -> dict[str, float]:
        """Prometheus samples as {'name{labels}': value}; a labelled counter's samples (a name ending in _total) are
        also summed under its bare name (e.g. 'edgefleet_generated_tokens_total' over its model_version), where that
        is not a sample itself."""
        text = httpx.get(self.base_url + "/metrics", timeout=60).text  # polled while the agent is busy generating
        samples: dict[str, float] = {}
        sums: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                samples[name] = float(value)
                if "{" in name and name.split("{", 1)[0].endswith("_total"):
                    bare = name.split("{", 1)[0]
                    sums[bare] = sums.get(bare, 0.0) + float(value)
        for bare, total in sums.items():
            samples.setdefault(bare, total)
        return samples

    def stop(self) -> int:
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.proc.wait(10)
        return self.proc.returncode


def start_agent(
    data_dir: Path,
    model: str = "smollm2-135m-instruct",
    sections: dict | None = None,
    wait_ready: bool = True,
    env: dict[str, str] | None = None,
    python: str = sys.executable,
) -> AgentProcess:
    """``env`` is added to this process's environment; ``python`` runs the agent (another venv's, say)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    sections = {k: list(v) if isinstance(v, list) else dict(v) for k, v in (sections or {}).items()}
    sections.setdefault("server", {}).setdefault("listen", "127.0.0.1:0")
    config = write_config(data_dir / "agent.toml", sections, {"data_dir": str(data_dir)})
    log_path = data_dir / "agent.log"
    address_file = data_dir / "http-address"
    address_file.unlink(missing_ok=True)
    cmd = [python, "-m", "edge_agent.cli", "serve", "--config", str(config), "--model", model]
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    agent = AgentProcess(proc, data_dir, log_path)
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"edge-agent exited with {proc.returncode} during start:\n{agent.log()}")
        if address_file.exists():
            agent.base_url = "http://" + address_file.read_text().strip()
            if not wait_ready:
                return agent
            try:
                if httpx.get(agent.base_url + "/readyz", timeout=5).status_code == 200:
                    return agent
            except httpx.TransportError:
                pass
        time.sleep(0.1)
    agent.stop()
    raise RuntimeError(f"edge-agent was not ready within {STARTUP_TIMEOUT_S}s:\n{agent.log()}")
