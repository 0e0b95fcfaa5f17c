"""Which Python runs this box's SuperNode, and whether the box can take part in federated learning at all.

flwr 1.42, which central's SuperLink runs, needs Python 3.11+, and a SuperLink refuses a SuperNode of
another Flower minor version (flwr.supercore.runtime_version_compatibility). JetPack 6's Python is 3.10.
So an agent on 3.10 runs its SuperNode under a second interpreter, in a virtual environment of its own
holding flwr and edgefleet's `federated` package (and nothing else: no llama.cpp, no model):

- ``[federated] python = ""`` (the default): the agent's own interpreter when it is 3.11+; on an older
  one, the SuperNode venv at ``<agent venv>/supernode`` when it was built (`edge-agent supernode-venv`,
  which `make` and the Debian package run when a Python 3.11+ is present).
- ``[federated] python = "/path/to/python3.11"``: that interpreter when it can run the SuperNode itself
  (a venv's python with flwr and edgefleet); a bare one through the SuperNode venv built from it.

Each candidate is asked what it has by running a few lines in it (:data:`PROBE`, no imports of
flwr: well under a second); :func:`choose` turns the answers into a :class:`Participation`, pure and
unit-tested. Whatever stops the box is said with the exact steps to fix it, in the agent's log,
`edge-agent status` and `edge-agent doctor`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from edgefleet import __version__ as EDGEFLEET_VERSION
from federated.errors import FederatedError

# The Flower release central's SuperLink runs (pyproject.toml pins it; a unit test keeps the two equal).
FLWR_VERSION = "1.42.0"
MIN_PYTHON = (3, 11)
PROBE_TIMEOUT_S = 20.0
PARTICIPATION_FILE = "participation.json"  # under <data_dir>/federated/, for `edge-agent status`

# Runs in the candidate interpreter, whatever its version: Python 3 syntax only, nothing imported that
# costs time (find_spec imports the `federated` package's __init__, which imports nothing).
PROBE = r"""
import json, sys
out = {"version": list(sys.version_info[:3]), "executable": sys.executable}
try:
    import importlib.metadata as metadata
    out["flwr"] = metadata.version("flwr")
except Exception:
    out["flwr"] = None
try:
    import edgefleet
    out["edgefleet"] = edgefleet.__version__
except Exception:
    out["edgefleet"] = None
try:
    import importlib.util
    out["supernode"] = importlib.util.find_spec("federated.fast_supernode") is not None
except Exception:
    out["supernode"] = False
print(json.dumps(out))
"""


@dataclass(frozen=True)
class PythonProbe:
    """What one interpreter said about itself; ``error`` when it could not be asked."""

    path: str
    version: tuple[int, ...] = ()
    flwr: str | None = None
    edgefleet: str | None = None
    supernode: bool = False
    executable: str = ""  # sys.executable as it reported it (a pyenv shim's real interpreter)
    error: str = ""

    @property
    def version_text(self) -> str:
        return ".".join(str(p) for p in self.version) or "unknown"


@dataclass(frozen=True)
class Participation:
    """Whether this box's SuperNode can run, under which interpreter, and if not why and what to do."""

    able: bool
    python: str = ""
    python_version: str = ""
    reason: str = ""
    steps: tuple[str, ...] = field(default=())

    def as_json(self) -> dict:
        return {
            "able": self.able,
            "python": self.python,
            "python_version": self.python_version,
            "reason": self.reason,
            "steps": list(self.steps),
        }

    def summary(self) -> str:
        if self.able:
            return f"SuperNode on Python {self.python_version} ({self.python})"
        return f"{self.reason}. To take part: " + "; ".join(f"({i}) {s}" for i, s in enumerate(self.steps, 1))


# -- pure ---------------------------------------------------------------------------------------------


def parse_probe(path: str, returncode: int | None, stdout: str, stderr: str) -> PythonProbe:
    """The probe's answer; ``returncode`` None: it could not be started (stderr says why)."""
    if returncode is None:
        return PythonProbe(path, error=stderr)
    if returncode != 0:
        last = (stderr.strip().splitlines() or [f"exit code {returncode}"])[-1]
        return PythonProbe(path, error=f"{path} failed to run: {last}")
    try:
        data = json.loads(stdout.strip().splitlines()[-1])
        version = tuple(int(p) for p in data["version"])
    except (ValueError, IndexError, KeyError, TypeError):
        return PythonProbe(path, error=f"{path} gave an unreadable answer: {stdout[:200]!r}")
    return PythonProbe(
        path,
        version=version,
        flwr=data.get("flwr") if isinstance(data.get("flwr"), str) else None,
        edgefleet=data.get("edgefleet") if isinstance(data.get("edgefleet"), str) else None,
        supernode=data.get("supernode") is True,
        executable=data.get("executable") if isinstance(data.get("executable"), str) else "",
    )


def _minor(version: str) -> tuple[str, ...]:
    return tuple(version.split(".")[:2])


def problem(probe: PythonProbe, edgefleet_version: str = EDGEFLEET_VERSION) -> str:
    """Why this interpreter cannot run the SuperNode; "" when it can."""
    if probe.error:
        return probe.error
    if probe.version[:2] < MIN_PYTHON:
        return f"{probe.path} is Python {probe.version_text}; flwr {FLWR_VERSION} needs Python 3.11 or later"
    if probe.flwr is None:
        return f"{probe.path} (Python {probe.version_text}) has no flwr installed"
    if _minor(probe.flwr) != _minor(FLWR_VERSION):
        return (
            f"{probe.path} has flwr {probe.flwr}; central's SuperLink runs flwr {FLWR_VERSION} and refuses "
            "another minor version"
        )
    if not probe.supernode or probe.edgefleet is None:
        return f"{probe.path} has flwr but not edgefleet's federated package"
    if probe.edgefleet != edgefleet_version:
        return f"{probe.path} has edgefleet {probe.edgefleet}, the agent is {edgefleet_version}: rebuild it"
    return ""


def venv_base(pyvenv_cfg: str) -> str:
    """The interpreter a venv was made from, as its pyvenv.cfg says (Python 3.11+ venvs write "executable")."""
    values = {}
    for line in pyvenv_cfg.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip().lower()] = value.strip()
    return values.get("executable", "")


def same_interpreter(a: str, b: str) -> bool:
    """Whether two interpreter paths are one program (symlinks and shims resolved)."""
    try:
        return bool(a and b) and os.path.realpath(a) == os.path.realpath(b)
    except OSError:
        return False


def install_steps(agent_venv: Path, interpreter: str) -> tuple[str, ...]:
    """What an operator runs so this box can take part, whatever stopped it. ``interpreter``: a Python 3.11+
    the box has; "" when it has none (a missing or too old one configured counts as none)."""
    edge_agent = agent_venv / "bin" / "edge-agent"
    steps = []
    if not interpreter:
        interpreter = "/usr/bin/python3.11"
        steps.append(
            "install a Python 3.11+ (Ubuntu 22.04 / JetPack 6: sudo add-apt-repository ppa:deadsnakes/ppa && "
            "sudo apt install python3.11 python3.11-venv)"
        )
    steps.append(f"build the SuperNode's environment from it: sudo {edge_agent} supernode-venv --python {interpreter}")
    steps.append(f'set [federated] python = "{interpreter}" in the agent\'s config and restart the agent')
    return tuple(steps)


def choose(
    configured: str,
    agent: PythonProbe,
    bundled: PythonProbe | None,
    bundled_base: str,
    agent_venv: Path,
    edgefleet_version: str = EDGEFLEET_VERSION,
) -> Participation:
    """Which interpreter runs the SuperNode.

    ``agent``: the agent's own interpreter when nothing is configured, else the configured one.
    ``bundled``: the SuperNode venv at <agent venv>/supernode (None: there is none), made from
    ``bundled_base``."""

    def able(probe: PythonProbe) -> Participation:
        return Participation(True, probe.path, probe.version_text)

    has_311 = bool(configured) and not agent.error and agent.version[:2] >= MIN_PYTHON
    steps = install_steps(agent_venv, configured if has_311 else "")
    if not problem(agent, edgefleet_version):
        return able(agent)
    # A configured bare interpreter runs the SuperNode through the venv built from it; with nothing
    # configured, an agent on an old Python uses the venv whatever it was built from.
    bundled_fits = bundled is not None and (
        not configured or same_interpreter(agent.executable or configured, bundled_base)
    )
    if bundled is not None and bundled_fits:
        why_not = problem(bundled, edgefleet_version)
        if not why_not:
            return able(bundled)
        return Participation(False, reason=f"the SuperNode venv cannot run it: {why_not}", steps=steps[-2:])
    reason = problem(agent, edgefleet_version)
    if not configured:
        reason = f"the agent runs on Python {agent.version_text}, and no SuperNode venv is built ({reason})"
    return Participation(False, reason=reason, steps=steps)


# -- I/O ----------------------------------------------------------------------------------------------


def probe_python(path: str, timeout_s: float = PROBE_TIMEOUT_S) -> PythonProbe:
    """Ask one interpreter what it has, in the agent's own environment (PYTHONPATH counts, as it will for the
    SuperNode)."""
    try:
        done = subprocess.run(
            [path, "-c", PROBE],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except FileNotFoundError:
        return parse_probe(path, None, "", f"{path} does not exist")
    except PermissionError:
        return parse_probe(path, None, "", f"{path} is not executable")
    except subprocess.TimeoutExpired:
        return parse_probe(path, None, "", f"{path} did not answer within {timeout_s:.0f} s")
    except OSError as exc:
        return parse_probe(path, None, "", f"{path} cannot be run: {exc}")
    return parse_probe(path, done.returncode, done.stdout, done.stderr)


def bundled_venv(agent_prefix: str = sys.prefix) -> Path:
    """Where `edge-agent supernode-venv` builds the SuperNode venv by default: inside the agent's venv."""
    return Path(agent_prefix) / "supernode"


def resolve(
    configured: str,
    agent_prefix: str = sys.prefix,
    agent_python: str = sys.executable,
    probe: Callable[[str], PythonProbe] = probe_python,
) -> Participation:
    """The participation this box has now: probes the candidates, then :func:`choose`."""
    configured = configured.strip()
    if configured:
        agent = probe(configured)
    else:
        agent = PythonProbe(
            agent_python,
            version=tuple(sys.version_info[:3]),
            flwr=_installed("flwr"),
            edgefleet=EDGEFLEET_VERSION,
            supernode=True,
        )
    venv = bundled_venv(agent_prefix)
    bundled, base = None, ""
    if (venv / "pyvenv.cfg").exists():
        bundled = probe(str(venv / "bin" / "python"))
        try:
            base = venv_base((venv / "pyvenv.cfg").read_text())
        except OSError:
            base = ""
    return choose(configured, agent, bundled, base, Path(agent_prefix))


def _installed(dist: str) -> str | None:
    import importlib.metadata

    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def write_participation(data_dir: Path, enabled: bool, participation: Participation | None, detail: str) -> None:
    """What the daemon found at start, for `edge-agent status` (which runs without probing anything)."""
    from edgefleet.atomicfile import write_public

    record = {"enabled": enabled, "detail": detail, **(participation.as_json() if participation else {})}
    path = Path(data_dir) / "federated" / PARTICIPATION_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    write_public(path, json.dumps(record, indent=2).encode())


def read_participation(data_dir: Path) -> dict | None:
    try:
        data = json.loads((Path(data_dir) / "federated" / PARTICIPATION_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def supernode_requirements(requires: Sequence[str]) -> list[str]:
    """The `supernode` extra of edgefleet's Requires-Dist lines ('flwr==1.42.0; extra == "supernode"')."""
    wanted = []
    for line in requires:
        spec, _, marker = line.partition(";")
        if marker.strip().replace("'", '"') == 'extra == "supernode"':
            wanted.append(spec.strip())
    return wanted


def build_command_lines(
    python: str, dest: Path, project: Sequence[str], requirements: Sequence[str], find_links: str = ""
) -> list[list[str]]:
    """The commands `edge-agent supernode-venv` runs: a venv from ``python``, the SuperNode's requirements
    (flwr at central's pin), then edgefleet itself without its dependencies (no llama.cpp, no models)."""
    pip = [str(dest / "bin" / "python"), "-m", "pip", "--disable-pip-version-check"]
    offline = ["--no-index", "--find-links", find_links] if find_links else []
    commands = [
        [python, "-m", "venv", "--clear", str(dest)],
        [*pip, "install", "--quiet", *offline, *requirements],
    ]
    if project:
        # --no-warn-conflicts: edgefleet's own dependencies (llama.cpp, the models) are left out on purpose.
        commands.append([*pip, "install", "--quiet", "--no-deps", "--no-warn-conflicts", *offline, *project])
    return commands


AGENT_CODE_PACKAGES = ("edgefleet", "federated")  # all the SuperNode and its ClientApp import of ours


def link_agent_code(dest: Path, python_version: tuple[int, ...]) -> Path:
    """Put the agent's own edgefleet and federated packages on the SuperNode venv's path: links to them in
    <dest>/edgefleet-agent-code, named by a .pth file in its site-packages."""
    import edgefleet

    code = dest / "edgefleet-agent-code"
    code.mkdir(exist_ok=True)
    for package in (Path(edgefleet.__file__).parent, Path(__file__).resolve().parent):
        link = code / package.name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(package.resolve(), target_is_directory=True)
    site = dest / "lib" / f"python{python_version[0]}.{python_version[1]}" / "site-packages"
    (site / "edgefleet-agent-code.pth").write_text(f"{code}\n")
    return code


class VenvBuildError(FederatedError):
    """`edge-agent supernode-venv` could not build the environment (the message says why)."""


def project_source(package_dir: Path | None = None) -> Path | None:
    """The source checkout this code runs from (its pyproject.toml names edgefleet); None when installed."""
    root = (package_dir or Path(__file__).resolve().parent).parent
    try:
        text = (root / "pyproject.toml").read_text()
    except OSError:
        return None
    return root if 'name = "edgefleet"' in text else None


def requirements_from_pyproject(text: str) -> list[str]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:
        import tomli as tomllib
    extras = tomllib.loads(text).get("project", {}).get("optional-dependencies", {})
    return [str(r) for r in extras.get("supernode", [])]


def build_supernode_venv(
    python: str,
    dest: Path,
    find_links: str = "",
    run: Callable[[list[str]], int] = lambda argv: subprocess.run(argv, check=False).returncode,
) -> Participation:
    """Make the SuperNode venv at ``dest`` from ``python`` and check that it can run the SuperNode.

    Refuses a ``dest`` that exists and is not a venv (``venv --clear`` would empty it). The requirements
    come from the package index, or offline from ``find_links``, where a ``requirements.txt`` is a hash
    lock installed with --require-hashes (the Debian package's). edgefleet itself: editable from a source
    checkout; edgefleet==<this version> from ``find_links``; else the agent's own packages, linked."""
    dest = Path(dest)
    if dest.exists() and not (dest / "pyvenv.cfg").exists() and any(dest.iterdir()):
        raise VenvBuildError(f"{dest} exists and is not a virtual environment: refusing to replace its contents")
    probe = probe_python(python)
    if probe.error:
        raise VenvBuildError(probe.error)
    if probe.version[:2] < MIN_PYTHON:
        raise VenvBuildError(f"{python} is Python {probe.version_text}; the SuperNode needs Python 3.11 or later")
    source = project_source()
    project: list[str] = []
    if source is not None:
        requirements = requirements_from_pyproject((source / "pyproject.toml").read_text())
        project = ["-e", str(source)]
    else:
        import importlib.metadata

        requirements = supernode_requirements(importlib.metadata.requires("edgefleet") or [])
        if find_links:
            project = [f"edgefleet=={EDGEFLEET_VERSION}"]
    if not requirements:
        raise VenvBuildError("edgefleet declares no `supernode` requirements (pyproject.toml's optional-dependencies)")
    lock = Path(find_links) / "requirements.txt" if find_links else None
    if lock is not None and lock.is_file():
        # A wheel directory with a hash lock (the Debian package's): exactly those wheels, nothing resolved anew.
        requirements = ["--only-binary=:all:", "--require-hashes", "-r", str(lock)]
    for argv in build_command_lines(python, dest, project, requirements, find_links):
        code = run(argv)
        if code != 0:
            raise VenvBuildError(f"`{' '.join(argv)}` failed with exit code {code}")
    if not project:
        # Installed without a wheel directory: no edgefleet wheel to install, so the SuperNode imports the
        # agent's own code (pure Python), which also keeps the two at one version.
        link_agent_code(dest, probe.version)
    built = probe_python(str(dest / "bin" / "python"))
    why_not = problem(built)
    if why_not:
        raise VenvBuildError(f"the venv was built but cannot run the SuperNode: {why_not}")
    return Participation(True, built.path, built.version_text)
