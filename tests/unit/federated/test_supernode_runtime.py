"""Which Python runs the SuperNode: the probe's answers, the choice, the steps, the venv build's commands.

The interpreters here are real where that costs nothing (this test's own, a missing path, a script that is
not Python); the choice itself is pure and gets made-up probes for the cases no machine has at once."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from federated import supernode, supernode_runtime
from federated.supernode_runtime import (
    FLWR_VERSION,
    Participation,
    PythonProbe,
    build_command_lines,
    choose,
    parse_probe,
    problem,
    supernode_requirements,
    venv_base,
)

ROOT = Path(__file__).resolve().parents[3]
VERSION = "0.1.0"
AGENT_VENV = Path("/opt/edgefleet/venv")


def ready(path: str = "/opt/sn/bin/python", **changes) -> PythonProbe:
    base = {
        "version": (3, 11, 9),
        "flwr": FLWR_VERSION,
        "edgefleet": VERSION,
        "supernode": True,
        "executable": path,
    }
    return PythonProbe(path, **{**base, **changes})


def old_agent() -> PythonProbe:
    return PythonProbe("/opt/edgefleet/venv/bin/python", version=(3, 10, 12), edgefleet=VERSION, supernode=True)


def test_the_pins_agree_flwr_in_pyproject_is_what_the_supernode_python_must_have():
    text = (ROOT / "pyproject.toml").read_text()
    pins = set(re.findall(r'"flwr==([0-9.]+)', text))
    assert pins == {FLWR_VERSION}
    assert f"flwr=={FLWR_VERSION}" in supernode_runtime.requirements_from_pyproject(text)


def test_the_probe_runs_in_a_real_interpreter_and_reports_this_one():
    probe = supernode_runtime.probe_python(sys.executable)
    assert probe.error == "" and probe.version[:2] == sys.version_info[:2]
    assert probe.supernode is True and probe.edgefleet == supernode_runtime.EDGEFLEET_VERSION
    if sys.version_info >= (3, 11):
        assert probe.flwr == FLWR_VERSION and problem(probe) == ""


def test_the_probe_says_what_is_wrong_with_a_missing_or_broken_interpreter(tmp_path):
    missing = supernode_runtime.probe_python(str(tmp_path / "python3.11"))
    assert missing.error == f"{tmp_path / 'python3.11'} does not exist"
    not_python = tmp_path / "python"
    not_python.write_text("#!/bin/sh\necho not python >&2\nexit 3\n")
    not_python.chmod(0o755)
    assert supernode_runtime.probe_python(str(not_python)).error == f"{not_python} failed to run: not python"
    unexecutable = tmp_path / "noexec"
    unexecutable.write_text("")
    assert "is not executable" in supernode_runtime.probe_python(str(unexecutable)).error


@pytest.mark.parametrize(
    "stdout, message",
    [
        ("", "unreadable answer"),
        ("garbage", "unreadable answer"),
        (json.dumps({"version": "3.11"}), "unreadable answer"),
        (json.dumps({"flwr": "1.42.0"}), "unreadable answer"),
    ],
)
def test_an_unreadable_probe_answer_is_an_error_not_a_crash(stdout, message):
    assert message in parse_probe("/x/python", 0, stdout, "").error


def test_a_probe_answer_with_wrongly_typed_fields_counts_as_absent():
    answer = json.dumps({"version": [3, 11, 2], "flwr": 142, "edgefleet": ["0.1.0"], "supernode": "yes"})
    probe = parse_probe("/x/python", 0, answer, "")
    assert (probe.flwr, probe.edgefleet, probe.supernode) == (None, None, False)
    assert problem(probe) == "/x/python (Python 3.11.2) has no flwr installed"


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"version": (3, 10, 12)}, "is Python 3.10.12; flwr 1.42.0 needs Python 3.11 or later"),
        ({"flwr": None}, "has no flwr installed"),
        ({"flwr": "1.30.0"}, "has flwr 1.30.0; central's SuperLink runs flwr 1.42.0 and refuses another minor"),
        ({"supernode": False, "edgefleet": None}, "has flwr but not edgefleet's federated package"),
        ({"edgefleet": "0.0.9"}, "has edgefleet 0.0.9, the agent is 0.1.0: rebuild it"),
    ],
)
def test_each_thing_a_supernode_python_can_lack_is_named(changes, message):
    assert message in problem(ready(**changes), VERSION)


def test_a_patch_release_of_the_same_flower_minor_is_accepted():
    assert problem(ready(flwr="1.42.3"), VERSION) == ""


def test_an_agent_on_311_runs_the_supernode_itself():
    agent = ready("/opt/edgefleet/venv/bin/python")
    assert choose("", agent, None, "", AGENT_VENV, VERSION) == Participation(True, agent.path, "3.11.9")


def test_an_agent_on_310_without_a_supernode_venv_cannot_take_part_and_gets_every_step():
    chosen = choose("", old_agent(), None, "", AGENT_VENV, VERSION)
    assert not chosen.able
    assert "the agent runs on Python 3.10.12, and no SuperNode venv is built" in chosen.reason
    assert "deadsnakes" in chosen.steps[0] and "python3.11-venv" in chosen.steps[0]
    build = "build the SuperNode's environment from it: sudo /opt/edgefleet/venv/bin/edge-agent supernode-venv"
    assert chosen.steps[1] == f"{build} --python /usr/bin/python3.11"
    assert chosen.steps[2].startswith('set [federated] python = "/usr/bin/python3.11"')
    assert "To take part: (1) install a Python 3.11+" in chosen.summary()


def test_an_agent_on_310_uses_the_bundled_supernode_venv():
    bundled = ready("/opt/edgefleet/venv/supernode/bin/python")
    chosen = choose("", old_agent(), bundled, "/usr/bin/python3.11", AGENT_VENV, VERSION)
    assert chosen == Participation(True, bundled.path, "3.11.9")


def test_a_configured_venv_python_runs_the_supernode_directly():
    configured = ready("/srv/sn/bin/python")
    assert choose("/srv/sn/bin/python", configured, None, "", AGENT_VENV, VERSION).python == "/srv/sn/bin/python"


def test_a_configured_bare_interpreter_runs_through_the_venv_built_from_it(tmp_path):
    bare = tmp_path / "python3.11"
    bare.write_text("")
    link = tmp_path / "python3"
    link.symlink_to(bare)
    configured = PythonProbe(str(link), version=(3, 11, 9), executable=str(link))
    bundled = ready("/opt/edgefleet/venv/supernode/bin/python")
    assert choose(str(link), configured, bundled, str(bare), AGENT_VENV, VERSION).python == bundled.path
    # A venv built from another interpreter is not the one the config names.
    other = choose(str(link), configured, bundled, "/usr/bin/python3.12", AGENT_VENV, VERSION)
    assert not other.able and "has no flwr installed" in other.reason
    build = "build the SuperNode's environment from it: sudo /opt/edgefleet/venv/bin/edge-agent supernode-venv"
    assert other.steps[0] == f"{build} --python {link}"


def test_a_broken_bundled_venv_is_reported_with_the_rebuild_steps():
    bundled = ready("/opt/edgefleet/venv/supernode/bin/python", edgefleet="0.0.9")
    chosen = choose("", old_agent(), bundled, "/usr/bin/python3.11", AGENT_VENV, VERSION)
    assert not chosen.able and chosen.reason.startswith("the SuperNode venv cannot run it: ")
    assert "rebuild it" in chosen.reason and len(chosen.steps) == 2 and "supernode-venv" in chosen.steps[0]


def test_a_configured_python_that_is_too_old_says_so():
    configured = PythonProbe("/usr/bin/python3.10", version=(3, 10, 12), executable="/usr/bin/python3.10")
    chosen = choose("/usr/bin/python3.10", configured, None, "", AGENT_VENV, VERSION)
    assert not chosen.able and "is Python 3.10.12; flwr 1.42.0 needs Python 3.11 or later" in chosen.reason
    # No use building the venv from it: the steps start with installing a Python 3.11+.
    assert chosen.steps[0].startswith("install a Python 3.11+")
    assert chosen.steps[1].endswith("supernode-venv --python /usr/bin/python3.11")


def test_resolve_with_a_missing_configured_interpreter_reports_it(tmp_path):
    chosen = supernode_runtime.resolve(str(tmp_path / "nope"), agent_prefix=str(tmp_path))
    assert not chosen.able and chosen.reason == f"{tmp_path / 'nope'} does not exist"


def test_venv_base_reads_pyvenv_cfg():
    cfg = "home = /usr/bin\ninclude-system-site-packages = false\nversion = 3.11.2\nexecutable = /usr/bin/python3.11\n"
    assert venv_base(cfg) == "/usr/bin/python3.11"
    assert venv_base("home = /usr/bin\n") == ""


def test_the_supernode_extra_is_read_from_requires_dist():
    lines = [
        "grpcio>=1.66",
        "flwr==1.42.0; python_version >= '3.11'",
        'flwr==1.42.0; extra == "supernode"',
        "numpy>=1.24; extra == 'supernode'",
        'pytest>=8; extra == "dev"',
    ]
    assert supernode_requirements(lines) == ["flwr==1.42.0", "numpy>=1.24"]


def test_the_venv_build_commands_install_the_requirements_then_edgefleet_without_its_dependencies():
    online = build_command_lines("/usr/bin/python3.11", Path("/v"), ["-e", "/src"], ["flwr==1.42.0"])
    assert online == [
        ["/usr/bin/python3.11", "-m", "venv", "--clear", "/v"],
        ["/v/bin/python", "-m", "pip", "--disable-pip-version-check", "install", "--quiet", "flwr==1.42.0"],
        [
            "/v/bin/python",
            "-m",
            "pip",
            "--disable-pip-version-check",
            "install",
            "--quiet",
            "--no-deps",
            "--no-warn-conflicts",
            "-e",
            "/src",
        ],
    ]
    offline = build_command_lines("/p", Path("/v"), ["edgefleet==0.1.0"], ["flwr==1.42.0"], "/opt/edgefleet/wheels")
    assert offline[2][-4:] == ["--no-index", "--find-links", "/opt/edgefleet/wheels", "edgefleet==0.1.0"]


def test_the_venv_build_refuses_a_destination_that_is_not_a_venv(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(supernode_runtime.VenvBuildError, match="exists and is not a virtual environment"):
        supernode_runtime.build_supernode_venv(sys.executable, tmp_path, run=lambda argv: 0)
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_the_venv_build_refuses_an_old_or_missing_interpreter(tmp_path):
    with pytest.raises(supernode_runtime.VenvBuildError, match="does not exist"):
        supernode_runtime.build_supernode_venv(str(tmp_path / "python9"), tmp_path / "v", run=lambda argv: 0)


def test_a_failed_step_of_the_venv_build_is_named(tmp_path):
    if sys.version_info < (3, 11):
        pytest.skip("needs this interpreter to be 3.11+ to get past the version check")
    ran = []

    def run(argv):
        ran.append(argv)
        return 0 if len(ran) < 2 else 1

    with pytest.raises(
        supernode_runtime.VenvBuildError, match=r"pip .* install .*flwr==1\.42\.0.* failed with exit code 1"
    ):
        supernode_runtime.build_supernode_venv(sys.executable, tmp_path / "v", run=run)
    assert len(ran) == 2


def test_the_supernode_runs_under_the_chosen_python(tmp_path):
    fast = supernode.supernode_command(
        "fast", "c:9092", tmp_path / "ca", tmp_path / "k", tmp_path, 0, "/opt/sn/bin/python"
    )
    assert fast[:3] == ["/opt/sn/bin/python", "-m", "federated.fast_supernode"]
    stock = supernode.supernode_command(
        "flower", "c:9092", tmp_path / "ca", tmp_path / "k", tmp_path, 5, "/opt/sn/bin/python"
    )
    assert stock[0] == "/opt/sn/bin/flower-supernode"


def test_the_participation_file_round_trips_and_a_damaged_one_is_none(tmp_path):
    chosen = Participation(False, reason="why", steps=("a", "b"))
    supernode_runtime.write_participation(tmp_path, True, chosen, chosen.summary())
    record = supernode_runtime.read_participation(tmp_path)
    assert record == {"enabled": True, "detail": "why. To take part: (1) a; (2) b", **chosen.as_json()}
    (tmp_path / "federated" / "participation.json").write_text("[1, 2")
    assert supernode_runtime.read_participation(tmp_path) is None


def test_a_wheel_directory_with_a_lock_installs_exactly_the_locked_wheels(tmp_path):
    if sys.version_info < (3, 11):
        pytest.skip("needs this interpreter to be 3.11+ to get past the version check")
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "requirements.txt").write_text("flwr==1.42.0 --hash=sha256:00\n")
    ran = []
    with pytest.raises(supernode_runtime.VenvBuildError, match="cannot run the SuperNode"):
        supernode_runtime.build_supernode_venv(
            sys.executable, tmp_path / "v", str(wheels), run=lambda a: ran.append(a) or 0
        )
    assert ran[1][-7:] == [
        "--no-index",
        "--find-links",
        str(wheels),
        "--only-binary=:all:",
        "--require-hashes",
        "-r",
        str(wheels / "requirements.txt"),
    ]


def test_an_installed_agent_without_a_wheel_directory_links_its_own_code_into_the_venv(tmp_path, monkeypatch):
    """Tried: the hand install on a box where edgefleet is installed (not a checkout) and no --find-links."""
    if sys.version_info < (3, 11):
        pytest.skip("needs this interpreter to be 3.11+ to get past the version check")
    monkeypatch.setattr(supernode_runtime, "project_source", lambda: None)
    dest = tmp_path / "v"
    ran = []

    def run(argv):
        ran.append(argv)
        if argv[1:3] == ["-m", "venv"]:
            (dest / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages").mkdir(
                parents=True
            )
        return 0

    with pytest.raises(supernode_runtime.VenvBuildError, match="cannot run the SuperNode"):
        supernode_runtime.build_supernode_venv(sys.executable, dest, run=run)
    assert len(ran) == 2 and "--no-index" not in ran[1] and "flwr==1.42.0" in ran[1]
    code = dest / "edgefleet-agent-code"
    assert (code / "federated" / "supernode_runtime.py").samefile(supernode_runtime.__file__)
    assert (code / "edgefleet" / "__init__.py").exists()
    (pth,) = (dest / "lib").glob("python*/site-packages/edgefleet-agent-code.pth")
    assert pth.read_text() == f"{code}\n"


def test_the_command_refuses_bad_input_with_the_reason_and_exit_1(tmp_path, capsys):
    """Tried through `edge-agent supernode-venv`: a missing interpreter, one too old (a script answering as
    3.10), and a --dest that holds other files (left untouched)."""
    from edge_agent.cli import main

    assert main(["supernode-venv", "--python", str(tmp_path / "nope"), "--dest", str(tmp_path / "v")]) == 1
    assert f"edge-agent: supernode-venv: {tmp_path / 'nope'} does not exist" in capsys.readouterr().err
    old = tmp_path / "python3.10"
    old.write_text("#!/bin/sh\necho '{\"version\": [3, 10, 12]}'\n")
    old.chmod(0o755)
    assert main(["supernode-venv", "--python", str(old), "--dest", str(tmp_path / "v")]) == 1
    assert "is Python 3.10.12; the SuperNode needs Python 3.11 or later" in capsys.readouterr().err
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep").write_text("x")
    assert main(["supernode-venv", "--python", sys.executable, "--dest", str(busy)]) == 1
    assert "exists and is not a virtual environment" in capsys.readouterr().err
    assert (busy / "keep").read_text() == "x" and not (tmp_path / "v").exists()
