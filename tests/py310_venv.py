"""A Python 3.10 agent for tests, as on JetPack 6: its own venv, with a SuperNode venv on a Python 3.11+ inside it.

Building it compiles llama-cpp-python for 3.10 (about 4 minutes on 2 cores), so it is built once and kept in
a cache outside the checkout (``$EDGEFLEET_TEST_CACHE``, default ``~/.cache/edgefleet-tests``), keyed by the
interpreter and everything the install depends on: pyproject.toml's dependency lists and llama.cpp's
CMAKE_ARGS. A run that finds it reuses it; a change to any of those builds a new one. The agent venv holds
the dependencies only: the agent runs this checkout's code through PYTHONPATH, so the cache never goes stale
with the source. Its SuperNode venv is built by the product's own `edge-agent supernode-venv --python
<3.11+>` into its default place, `<venv>/supernode`, exactly as an operator does on the box.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DONE = ".edgefleet-test-venv-complete"


def find_python310() -> str | None:
    """A working Python 3.10: $EDGEFLEET_TEST_PYTHON310, python3.10 on PATH, or pyenv's."""
    candidates = [os.environ.get("EDGEFLEET_TEST_PYTHON310", ""), shutil.which("python3.10") or ""]
    candidates += sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.10.*/bin/python3.10")), reverse=True)
    candidates.append("/usr/bin/python3.10")
    for candidate in filter(None, candidates):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            done = subprocess.run(
                [candidate, "-c", "import sys, venv; print(sys.version_info[:2] == (3, 10))"],
                capture_output=True,
                text=True,
                timeout=30,
            )
            if done.stdout.strip() == "True":
                return candidate
    return None


def supernode_interpreter() -> str:
    """The bare Python 3.11+ this test run is on (its venv's base), as the box's /usr/bin/python3.11."""
    base = Path(sys.base_prefix) / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    return str(base if base.exists() else Path(sys.base_prefix) / "bin" / "python3")


def _requirements() -> tuple[list[str], str, str, list[str]]:
    """What the agent venv installs: [project] dependencies and the cpu extra (llama-cpp-python's pin apart,
    built first with CMAKE_ARGS), the llama pin, the CMAKE_ARGS make uses, and the SuperNode venv's extra."""
    import tomllib

    from federated.supernode_runtime import requirements_from_pyproject

    text = (ROOT / "pyproject.toml").read_text()
    project = tomllib.loads(text)["project"]
    deps = [*project["dependencies"], *project["optional-dependencies"]["cpu"]]
    llama = next(d for d in deps if d.startswith("llama-cpp-python=="))
    cmake_args = subprocess.run(
        ["make", "-s", "-C", str(ROOT), "print-cmake-args"], capture_output=True, text=True, check=True
    ).stdout.strip()
    return [d for d in deps if d != llama], llama, cmake_args, requirements_from_pyproject(text)


def _cache_root() -> Path:
    return Path(os.environ.get("EDGEFLEET_TEST_CACHE") or Path.home() / ".cache" / "edgefleet-tests")


def _run(argv: list[str], log, env: dict[str, str] | None = None) -> None:
    log.write(f"$ {' '.join(argv)}\n".encode())
    log.flush()
    done = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"`{' '.join(argv)}` failed with exit code {done.returncode}; see {log.name}")


def agent_venv_310(python310: str) -> tuple[Path, float]:
    """The cached 3.10 agent venv (built now if missing) and the seconds this call spent building."""
    deps, llama, cmake_args, supernode_extra = _requirements()
    version = subprocess.run([python310, "-VV"], capture_output=True, text=True, check=True).stdout.strip()
    key = hashlib.sha256(
        "\n".join([version, llama, cmake_args, supernode_interpreter(), *deps, *supernode_extra]).encode()
    ).hexdigest()[:16]
    cache = _cache_root()
    cache.mkdir(parents=True, exist_ok=True)
    venv = cache / f"agent-py310-{key}"
    with open(cache / f"{venv.name}.lock", "wb") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time; a second session waits and then reuses it
        if (venv / DONE).exists():
            return venv, 0.0
        started = time.monotonic()
        shutil.rmtree(venv, ignore_errors=True)  # a build cut short: start over
        with open(cache / f"{venv.name}.log", "wb") as log:
            _run([python310, "-m", "venv", str(venv)], log)
            pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check"]
            # As make does: compiled with the agent's CMAKE_ARGS, never from pip's wheel cache (which ignores them).
            _run([*pip, "install", "--no-cache-dir", llama], log, env={**os.environ, "CMAKE_ARGS": cmake_args})
            _run([*pip, "install", *deps], log)
            # The product's own command, run by the 3.10 agent's interpreter, as an operator would.
            _run(
                [
                    str(venv / "bin" / "python"),
                    "-m",
                    "edge_agent.cli",
                    "supernode-venv",
                    "--python",
                    supernode_interpreter(),
                ],
                log,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
            )
        (venv / DONE).write_text(f"built in {time.monotonic() - started:.0f} s\n")
        return venv, time.monotonic() - started
