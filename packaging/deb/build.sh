#!/usr/bin/env bash
# Build edgefleet's Debian packages with dpkg-deb (packaging/deb/README.md).
#
#   packaging/deb/build.sh [--version V] [--out DIR] [--wheelhouse DIR] [--python PY]
#                          [--supernode-python PY] [--extra cpu|gpu] [--compress TYPE[:LEVEL]]
#                          [agent|central|all|wheelhouse]
#
#   agent       edgefleet-agent_<version>_<arch>.deb    (edge-agent, /opt/edgefleet)
#   central     edgefleet-central_<version>_<arch>.deb  (edgefleet, /opt/edgefleet-central)
#   all         both (the default)
#   wheelhouse  only `pip wheel` the project and every dependency (plus pip, setuptools,
#               wheel) into --out, for later --wheelhouse builds and offline rebuilds
#
#   --version V      the Debian version (default: pyproject.toml's). Its upstream part,
#                    with "~" dropped, must be a PEP 440 version: the project wheel is
#                    built with it (0.2.0~rc1 -> 0.2.0rc1), so `edge-agent --version` agrees.
#   --out DIR        where the .debs go (default: dist/deb)
#   --wheelhouse DIR dependency wheels built before (by `build.sh wheelhouse`); without
#                    it they are built now with `pip wheel` (network or pip's caches)
#   --python PY      the target's interpreter (default /usr/bin/python3): the wheels are
#                    for its version, and the packages depend on that python3 minor version
#   --supernode-python PY
#                    for a target Python older than 3.11 (JetPack 6's 3.10): a Python 3.11+ of
#                    the target's architecture here (e.g. /usr/bin/python3.11). The agent package
#                    then also carries the Flower SuperNode's wheels for that Python's version
#                    (/opt/edgefleet/supernode-wheels), and its postinst builds the SuperNode venv
#                    when the box has /usr/bin/python3.X of that version. Ignored on a 3.11+ target
#                    (the agent runs its SuperNode itself)
#   --extra E        edgefleet's extra installed on the box: cpu (default) or gpu
#   --compress T[:L] dpkg-deb compression (default gzip:1: the payload is wheels and GGUF
#                    files, already compressed, so harder settings only cost time)
#
# Only the paths of the built .debs (or of the wheelhouse) go to stdout; progress to stderr.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)

die() { echo "build.sh: $*" >&2; exit 1; }
note() { echo "build.sh [${SECONDS}s]: $*" >&2; }
usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; }

VERSION=""
OUT="$REPO/dist/deb"
WHEELHOUSE=""
PYTHON=/usr/bin/python3
SUPERNODE_PYTHON=""
EXTRA=cpu
COMPRESS=gzip:1
TARGET=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --version) VERSION=${2:?--version needs a value}; shift 2 ;;
        --out) OUT=${2:?--out needs a directory}; shift 2 ;;
        --wheelhouse) WHEELHOUSE=${2:?--wheelhouse needs a directory}; shift 2 ;;
        --python) PYTHON=${2:?--python needs an interpreter}; shift 2 ;;
        --supernode-python) SUPERNODE_PYTHON=${2:?--supernode-python needs an interpreter}; shift 2 ;;
        --extra) EXTRA=${2:?--extra needs cpu or gpu}; shift 2 ;;
        --compress) COMPRESS=${2:?--compress needs TYPE[:LEVEL]}; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        agent|central|all|wheelhouse)
            [[ -z $TARGET ]] || die "one target at a time (got $TARGET and $1)"
            TARGET=$1; shift ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done
TARGET=${TARGET:-all}
case "$EXTRA" in cpu|gpu) ;; *) die "--extra must be cpu or gpu, not $EXTRA" ;; esac
COMP_TYPE=${COMPRESS%%:*}
COMP_LEVEL=""
[[ $COMPRESS != *:* ]] || COMP_LEVEL=${COMPRESS#*:}
case "$COMP_TYPE" in gzip|xz|zstd|none) ;; *) die "--compress: gzip, xz, zstd or none, not $COMP_TYPE" ;; esac

case "$TARGET" in
    all) PACKAGES=(agent central) ;;
    wheelhouse) PACKAGES=() ;;
    *) PACKAGES=("$TARGET") ;;
esac

# --- What the packages need from the tree: fail before any slow step. ---
for tool in dpkg dpkg-deb sha256sum md5sum tar; do
    command -v "$tool" >/dev/null || die "$tool is missing (apt-get install dpkg-dev coreutils tar)"
done
[[ -x $PYTHON ]] || die "$PYTHON is not an executable interpreter (--python)"
# The SuperNode's wheels (agent package, target Python older than 3.11): checked here, before any slow step.
SN_MINOR=""
if [[ " ${PACKAGES[*]} " == *" agent "* ]]; then
    target_minor=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])') \
        || die "$PYTHON does not run (--python)"
    if "$PYTHON" -c 'import sys; sys.exit(sys.version_info >= (3, 11))'; then
        if [[ -n $SUPERNODE_PYTHON ]]; then
            [[ -x $SUPERNODE_PYTHON ]] || die "$SUPERNODE_PYTHON is not an executable interpreter (--supernode-python)"
            SN_MINOR=$("$SUPERNODE_PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null) \
                || die "$SUPERNODE_PYTHON does not run (--supernode-python)"
            "$SUPERNODE_PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
                || die "--supernode-python $SUPERNODE_PYTHON is Python $SN_MINOR; the SuperNode (flwr) needs 3.11 or later"
            target_platform=$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_platform())')
            sn_platform=$("$SUPERNODE_PYTHON" -c 'import sysconfig; print(sysconfig.get_platform())') \
                || die "$SUPERNODE_PYTHON has no sysconfig (--supernode-python)"
            [[ $sn_platform == "$target_platform" ]] \
                || die "--supernode-python $SUPERNODE_PYTHON is for $sn_platform, the target's $PYTHON for $target_platform"
        else
            note "$PYTHON is Python $target_minor and no --supernode-python was given: the agent package will not" \
                "carry the SuperNode's wheels, and for federated learning a box needs \`edge-agent supernode-venv\`" \
                "run by hand (packaging/deb/README.md)"
        fi
    elif [[ -n $SUPERNODE_PYTHON ]]; then
        note "$PYTHON is Python $target_minor: the agent runs its SuperNode itself, --supernode-python is not used"
    fi
fi
for pkg in "${PACKAGES[@]}"; do
    case "$pkg" in
        agent) unit=packaging/systemd/edge-agent.service ;;
        central) unit=packaging/systemd/edgefleet-central.service ;;
    esac
    [[ -f $REPO/$unit ]] || die "$unit is missing: the edgefleet-$pkg package ships that systemd unit as it is in the tree at build time"
done
if [[ " ${PACKAGES[*]} " == *" agent "* ]]; then
    [[ -f $REPO/packaging/edge-agent.example.toml ]] || die "packaging/edge-agent.example.toml is missing: it becomes /etc/edgefleet/agent.toml"
fi
if [[ -n $WHEELHOUSE ]]; then
    [[ -d $WHEELHOUSE ]] || die "--wheelhouse $WHEELHOUSE is not a directory"
    WHEELHOUSE=$(cd "$WHEELHOUSE" && pwd)
fi
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

WORK=$(mktemp -d "${TMPDIR:-/tmp}/edgefleet-deb.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# --- A build environment on the target's interpreter: its pip decides wheel tags and markers. ---
note "build environment on $PYTHON"
"$PYTHON" -m venv "$WORK/buildenv" >&2 || die "$PYTHON -m venv failed (on Debian/Ubuntu: apt-get install python3-venv)"
BPY="$WORK/buildenv/bin/python"
PIP=("$BPY" -m pip --disable-pip-version-check)
# As the Makefile: on x86-64, llama.cpp for AVX2 without AVX-512 or AMX (its AMX kernels fault
# once two models are loaded, and a portable wheel suits more boxes). CMAKE_ARGS overrides.
if [[ -z ${CMAKE_ARGS+set} && $(uname -m) == x86_64 ]]; then
    export CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"
fi
PY_MINOR=$("$BPY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
"$BPY" -c 'import sys; sys.exit(sys.version_info < (3, 10))' || die "$PYTHON is Python $PY_MINOR; edgefleet needs 3.10 or later"
NEXT_MINOR=$("$BPY" -c 'import sys; print("%d.%d" % (sys.version_info[0], sys.version_info[1] + 1))')

# --- Versions: the Debian one, and the PEP 440 one the project wheel is built with. ---
PYPROJECT_VERSION=$(sed -n 's/^version = "\([^"]*\)"$/\1/p' "$REPO/pyproject.toml" | head -n 1)
[[ -n $PYPROJECT_VERSION ]] || die "no version = \"...\" line in pyproject.toml"
DEB_VERSION=${VERSION:-$PYPROJECT_VERSION}
[[ $DEB_VERSION =~ ^([0-9]+:)?[0-9][A-Za-z0-9.+~-]*$ ]] || die "--version $DEB_VERSION is not a Debian version"
FILE_VERSION=${DEB_VERSION#*:}     # no epoch: file names and the venv's directory
UPSTREAM=$FILE_VERSION
[[ $UPSTREAM != *-* ]] || UPSTREAM=${UPSTREAM%-*}
PY_VERSION=$("$BPY" - "$UPSTREAM" <<'EOF'
import sys
from pip._vendor.packaging.version import InvalidVersion, Version
try:
    print(Version(sys.argv[1].replace("~", "")))
except InvalidVersion:
    sys.exit(f"build.sh: {sys.argv[1]!r} (the upstream part of the Debian version, '~' dropped) is not a PEP 440 version")
EOF
)

# --- A clean copy of the sources (tracked and not-ignored files only: no .venv, build/,
#     caches or keys lying in the tree), at PY_VERSION. ---
SRC="$WORK/src"
mkdir -p "$SRC"
if git -C "$REPO" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    (cd "$REPO" && git ls-files -z --cached --others --exclude-standard \
        | while IFS= read -r -d '' f; do [[ -e $f ]] && printf '%s\0' "$f"; done \
        | tar --null -T - -cf -) | tar -C "$SRC" -xf -
else
    tar -C "$REPO" --exclude=.git --exclude=.venv --exclude=build --exclude=dist --exclude='*.egg-info' \
        --exclude=__pycache__ --exclude='*.pyc' --exclude=.pytest_cache --exclude=.hypothesis --exclude=.fleet \
        -cf - . | tar -C "$SRC" -xf -
fi
if [[ $PY_VERSION != "$PYPROJECT_VERSION" ]]; then
    sed -i "s/^version = \"$PYPROJECT_VERSION\"$/version = \"$PY_VERSION\"/" "$SRC/pyproject.toml"
    sed -i "s/^__version__ = \".*\"$/__version__ = \"$PY_VERSION\"/" "$SRC/edgefleet/__init__.py"
    grep -q "^version = \"$PY_VERSION\"$" "$SRC/pyproject.toml" \
        && grep -q "^__version__ = \"$PY_VERSION\"$" "$SRC/edgefleet/__init__.py" \
        || die "could not set the version $PY_VERSION in pyproject.toml and edgefleet/__init__.py"
fi

# --- The wheelhouse: the project and every dependency, for this Python. ---
build_wheelhouse() {
    note "pip wheel: edgefleet[$EXTRA] $PY_VERSION and its dependencies for Python $PY_MINOR into $1"
    note "(quick from pip's caches; with a cold wheel cache llama-cpp-python compiles, about 4 minutes on 2 cores)"
    "${PIP[@]}" wheel --progress-bar off --wheel-dir "$1" "$SRC[$EXTRA]" pip "setuptools>=77" wheel >&2
}
if [[ $TARGET == wheelhouse ]]; then
    build_wheelhouse "$OUT"
    echo "$OUT"
    exit 0
fi
if [[ -z $WHEELHOUSE ]]; then
    WHEELHOUSE="$WORK/wheelhouse"
    build_wheelhouse "$WHEELHOUSE"
fi
# The pip that ships in the package checks the lock file here, as it will on the box.
"${PIP[@]}" install --isolated --no-index --find-links "$WHEELHOUSE" --upgrade --quiet pip >&2 \
    || die "the wheelhouse $WHEELHOUSE has no pip wheel (build it with: build.sh --out DIR wheelhouse)"

# --- The project wheel, built offline at PY_VERSION (setuptools and wheel from the wheelhouse). ---
note "building the edgefleet $PY_VERSION wheel"
"${PIP[@]}" wheel --isolated --quiet --no-deps --no-index --find-links "$WHEELHOUSE" \
    --wheel-dir "$WORK/project" "$SRC" >&2 \
    || die "could not build the project wheel offline: the wheelhouse needs setuptools>=77 and wheel (build.sh wheelhouse adds them)"

# --- The lock: exactly what `pip install edgefleet[EXTRA]==PY_VERSION` installs, with hashes. ---
mkdir -p "$WORK/candidates" "$WORK/wheels"
for whl in "$WHEELHOUSE"/*.whl; do
    case "${whl##*/}" in edgefleet-*) ;; *) ln -s "$whl" "$WORK/candidates/" ;; esac
done
ln -s "$WORK"/project/edgefleet-*.whl "$WORK/candidates/"
note "resolving edgefleet[$EXTRA]==$PY_VERSION offline against the wheelhouse"
"${PIP[@]}" install --isolated --dry-run --ignore-installed --no-index --find-links "$WORK/candidates" \
    --only-binary=:all: --quiet --report "$WORK/report.json" pip "edgefleet[$EXTRA]==$PY_VERSION" >&2 \
    || die "the wheelhouse lacks wheels that edgefleet[$EXTRA]==$PY_VERSION needs on Python $PY_MINOR (see pip's message above)"
# lock.py REPORT DIR EXTRA HEADER (run by a build venv's python): copies the wheels of pip's --report
# into DIR and writes DIR/requirements.txt, each with its sha256; HEADER is its first comment.
cat > "$WORK/lock.py" <<'EOF'
import hashlib, json, shutil, sys
from pathlib import Path
from urllib.parse import unquote, urlparse

report, wheels, extra = json.loads(Path(sys.argv[1]).read_text()), Path(sys.argv[2]), sys.argv[3]
lines = []
for item in report["install"]:
    source = Path(unquote(urlparse(item["download_info"]["url"]).path))
    if source.suffix != ".whl":
        sys.exit(f"build.sh: {source.name} is not a wheel")
    shutil.copyfile(source, wheels / source.name)
    digest = hashlib.sha256((wheels / source.name).read_bytes()).hexdigest()
    name, version = item["metadata"]["name"], item["metadata"]["version"]
    name = f"{name}[{extra}]" if name == "edgefleet" and extra else name
    lines.append(f"{name}=={version} --hash=sha256:{digest}")
(wheels / "requirements.txt").write_text(
    f"# {sys.argv[4]}\n"
    "#   pip install --no-index --find-links . --require-hashes -r requirements.txt\n"
    + "".join(line + "\n" for line in sorted(lines, key=str.lower)))
EOF
"$BPY" "$WORK/lock.py" "$WORK/report.json" "$WORK/wheels" "$EXTRA" \
    "What postinst installs into the venv, offline, from this directory:"
"${PIP[@]}" install --isolated --dry-run --ignore-installed --no-index --find-links "$WORK/wheels" \
    --only-binary=:all: --require-hashes --quiet -r "$WORK/wheels/requirements.txt" >&2 \
    || die "the lock file does not install from the packaged wheels (a bug in build.sh)"
note "$(($(wc -l < "$WORK/wheels/requirements.txt") - 2)) wheels, $(du -sh "$WORK/wheels" | cut -f1)"

# --- The SuperNode's wheels (agent package, target older than 3.11, --supernode-python): the
#     pyproject's `supernode` extra for that Python, locked the same way, plus the project wheel,
#     for postinst's `edge-agent supernode-venv --find-links /opt/edgefleet/supernode-wheels`. ---
if [[ -n $SN_MINOR ]]; then
    note "build environment for the SuperNode's wheels on $SUPERNODE_PYTHON (Python $SN_MINOR)"
    "$SUPERNODE_PYTHON" -m venv "$WORK/sn-buildenv" >&2 \
        || die "$SUPERNODE_PYTHON -m venv failed (on Debian/Ubuntu: apt-get install python$SN_MINOR-venv)"
    SN_BPY="$WORK/sn-buildenv/bin/python"
    SN_PIP=("$SN_BPY" -m pip --disable-pip-version-check)
    mapfile -t SN_REQS < <("$SN_BPY" - "$SRC/pyproject.toml" <<'EOF'
import sys, tomllib
extras = tomllib.loads(open(sys.argv[1], encoding="utf-8").read())["project"].get("optional-dependencies", {})
print("\n".join(extras.get("supernode", [])))
EOF
)
    [[ ${#SN_REQS[@]} -gt 0 && -n ${SN_REQS[0]} ]] || die "pyproject.toml has no \`supernode\` optional-dependencies"
    note "pip wheel: the SuperNode's requirements (${SN_REQS[*]}) for Python $SN_MINOR"
    "${SN_PIP[@]}" wheel --progress-bar off --wheel-dir "$WORK/sn-wheelhouse" "${SN_REQS[@]}" >&2 \
        || die "pip wheel of the SuperNode's requirements on $SUPERNODE_PYTHON failed (network or pip's caches)"
    "${SN_PIP[@]}" install --isolated --dry-run --ignore-installed --no-index --find-links "$WORK/sn-wheelhouse" \
        --only-binary=:all: --quiet --report "$WORK/sn-report.json" "${SN_REQS[@]}" >&2 \
        || die "the SuperNode's wheels do not resolve offline on Python $SN_MINOR (see pip's message above)"
    mkdir -p "$WORK/supernode-wheels"
    "$SN_BPY" "$WORK/lock.py" "$WORK/sn-report.json" "$WORK/supernode-wheels" "" \
        "The SuperNode's requirements for Python $SN_MINOR; \`edge-agent supernode-venv --find-links DIR\` installs them:"
    "${SN_PIP[@]}" install --isolated --dry-run --ignore-installed --no-index --find-links "$WORK/supernode-wheels" \
        --only-binary=:all: --require-hashes --quiet -r "$WORK/supernode-wheels/requirements.txt" >&2 \
        || die "the SuperNode's lock file does not install from its wheels (a bug in build.sh)"
    # The same project wheel as in wheels/ (a copy, not a link: no hard links inside the package).
    cp "$WORK"/wheels/edgefleet-*-py3-none-any.whl "$WORK/supernode-wheels/"
    note "SuperNode: $(($(wc -l < "$WORK/supernode-wheels/requirements.txt") - 2)) wheels for Python $SN_MINOR," \
        "$(du -sh "$WORK/supernode-wheels" | cut -f1)"
fi

ARCH=$(dpkg --print-architecture)
MAINTAINER="${DEBFULLNAME:-edgefleet maintainers} <${DEBEMAIL:-maintainers@edgefleet.invalid}>"

# --- One package. ---
build_package() {
    local pkg=$1 name prefix unit state_dir config_dirs other enable entry summary details sn_minor=""
    case "$pkg" in
        agent)
            name=edgefleet-agent prefix=/opt/edgefleet unit=edge-agent.service
            state_dir=/var/lib/edge-agent config_dirs=/etc/edgefleet other=edgefleet-central
            enable=yes entry=edge-agent
            summary="edgefleet edge LLM agent: local quantized inference, OpenAI-compatible API"
            details="The edge-agent daemon (systemd unit edge-agent.service, listening on
127.0.0.1:8080 by default) serving the built-in models SmolLM2-135M-Instruct
and gemma-3-270m, with routing policy, response cache and fleet membership.
Configuration: /etc/edgefleet/agent.toml."
            ;;
        central)
            name=edgefleet-central prefix=/opt/edgefleet-central unit=edgefleet-central.service
            state_dir=/var/lib/edgefleet-central config_dirs="" other=edgefleet-agent
            enable=no entry=edgefleet
            summary="edgefleet coordinator: enrollment, fleet health, model rollouts, federated learning"
            details="The edgefleet-central service (enrollment, fleet and admin gRPC APIs,
model registry, rollout controller, Flower SuperLink) and the edgefleet CLI.
Site flags: /etc/default/edgefleet-central. Not enabled on install: its
first start creates the fleet's CA."
            ;;
    esac
    local stage="$WORK/stage-$name"
    note "staging $name $DEB_VERSION ($ARCH)"
    install -d "$stage/DEBIAN" "$stage$prefix/wheels" "$stage/lib/systemd/system" "$stage/usr/bin" \
        "$stage/usr/share/doc/$name"
    cp -l "$WORK"/wheels/* "$stage$prefix/wheels/"
    if [[ $pkg == agent && -n $SN_MINOR ]]; then
        sn_minor=$SN_MINOR
        install -d "$stage$prefix/supernode-wheels"
        cp -l "$WORK"/supernode-wheels/* "$stage$prefix/supernode-wheels/"
    fi

    # The unit, as the tree has it. Central's environment is /opt/edgefleet-central/venv
    # (each package owns its own tree, so both install on one box), so its paths are moved there.
    case "$pkg" in
        agent)
            grep -q "/opt/edgefleet/venv/bin/edge-agent" "$REPO/packaging/systemd/$unit" \
                || die "packaging/systemd/$unit does not run /opt/edgefleet/venv/bin/edge-agent, where this package installs it"
            install -m 0644 "$REPO/packaging/systemd/$unit" "$stage/lib/systemd/system/$unit"
            if compgen -G "$REPO/packaging/systemd/$unit.d/*.conf" >/dev/null; then
                install -d "$stage/usr/share/edgefleet/systemd"
                install -m 0644 "$REPO/packaging/systemd/$unit.d"/*.conf "$stage/usr/share/edgefleet/systemd/"
            fi
            ;;
        central)
            sed 's#/opt/edgefleet/venv/#/opt/edgefleet-central/venv/#g' "$REPO/packaging/systemd/$unit" \
                > "$stage/lib/systemd/system/$unit"
            grep -q "/opt/edgefleet-central/venv/bin/edgefleet" "$stage/lib/systemd/system/$unit" \
                || die "packaging/systemd/$unit does not run /opt/edgefleet/venv/bin/edgefleet (or /opt/edgefleet-central/venv/bin/edgefleet)"
            # Scheduled backups: shipped, not enabled (the passphrase file comes first; docs/operations.md).
            for backup_unit in edgefleet-central-backup.service edgefleet-central-backup.timer; do
                sed 's#/opt/edgefleet/venv/#/opt/edgefleet-central/venv/#g' "$REPO/packaging/systemd/$backup_unit" \
                    > "$stage/lib/systemd/system/$backup_unit"
            done
            ;;
    esac
    ln -s "$prefix/venv/bin/$entry" "$stage/usr/bin/$entry"

    # Configuration (conffiles: dpkg keeps local edits on upgrade).
    local conffiles=()
    case "$pkg" in
        agent)
            install -d "$stage/etc/edgefleet" "$stage/etc/default"
            {
                echo "# /etc/edgefleet/agent.toml: the edge-agent service's configuration, installed by"
                echo "# the edgefleet-agent package; your edits are kept on upgrade (a conffile)."
                echo "# After editing: systemctl restart edge-agent. Secrets (upstream API keys) go in"
                echo "# /etc/default/edge-agent. data_dir stays empty here: the service's"
                echo "# StateDirectory, /var/lib/edge-agent."
                echo "#"
                sed 's/^data_dir = .*/data_dir = ""/' "$REPO/packaging/edge-agent.example.toml"
            } > "$stage/etc/edgefleet/agent.toml"
            grep -q '^data_dir = ""$' "$stage/etc/edgefleet/agent.toml" \
                || die "packaging/edge-agent.example.toml has no top-level data_dir line"
            cat > "$stage/etc/default/edge-agent" <<'EOF'
# Environment of the edge-agent service (systemd EnvironmentFile=), read by
# systemd before the service starts; mode 0600 because it holds secrets.
# After editing: systemctl restart edge-agent.
#
# The bearer keys of the upstreams in /etc/edgefleet/agent.toml (each
# [[upstreams]] names its variable in api_key_env), e.g.
# EDGEFLEET_CLOUD_EU_KEY=sk-...
EOF
            conffiles=(/etc/edgefleet/agent.toml /etc/default/edge-agent)
            ;;
        central)
            install -d "$stage/etc/default"
            cat > "$stage/etc/default/edgefleet-central" <<'EOF'
# Environment of the edgefleet-central service (systemd EnvironmentFile=).
# After editing: systemctl restart edgefleet-central.
#
# Site flags for `edgefleet central serve`: --advertise HOST (the name agents
# reach central by), --listen HOST:PORT, --enroll-listen HOST:PORT,
# --superlink-listen HOST:PORT or --no-superlink, --heartbeat-interval,
# --cert-lifetime, --log-level. Set --advertise before the first start.
# e.g. EDGEFLEET_CENTRAL_OPTS="--advertise central.example.net"
EDGEFLEET_CENTRAL_OPTS=""
EOF
            conffiles=(/etc/default/edgefleet-central)
            ;;
    esac

    install -m 0644 "$REPO/README.md" "$stage/usr/share/doc/$name/README.md"
    install -m 0644 "$HERE/README.md" "$stage/usr/share/doc/$name/README.Debian"
    cat > "$stage/usr/share/doc/$name/copyright" <<'EOF'
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: edgefleet
Comment: The wheels in /opt/edgefleet*/wheels carry their own licences in their
 *.dist-info directories.

Files: *
Copyright: the edgefleet authors
License: Apache-2.0
 On Debian systems the full text is in /usr/share/common-licenses/Apache-2.0.
EOF

    # Maintainer scripts: one template each for both packages.
    local script
    for script in postinst prerm postrm; do
        sed -e "s|@PACKAGE@|$name|g" -e "s|@VERSION@|$FILE_VERSION|g" -e "s|@PREFIX@|$prefix|g" \
            -e "s|@UNIT@|$unit|g" -e "s|@STATE_DIR@|$state_dir|g" -e "s|@CONFIG_DIRS@|$config_dirs|g" \
            -e "s|@OTHER_PACKAGE@|$other|g" -e "s|@ENABLE_ON_INSTALL@|$enable|g" \
            -e "s|@PY_MINOR@|$PY_MINOR|g" -e "s|@SUPERNODE_PY_MINOR@|$sn_minor|g" \
            "$HERE/scripts/$script" > "$stage/DEBIAN/$script"
        ! grep -n '@[A-Z_]*@' "$stage/DEBIAN/$script" >&2 || die "unfilled placeholder in $script"
    done
    printf '%s\n' "${conffiles[@]}" > "$stage/DEBIAN/conffiles"

    # Nothing from a build or a checkout, no keys.
    local junk
    junk=$(find "$stage" \( -name __pycache__ -o -name '*.pyc' -o -name .git -o -name '*.pem' -o -name '*.key' \
        -o -name '*.egg-info' \) -print)
    [[ -z $junk ]] || die "build artefacts in the package: $junk"

    find "$stage" -type d -exec chmod 0755 {} +
    find "$stage" -type f -exec chmod 0644 {} +
    chmod 0755 "$stage/DEBIAN/postinst" "$stage/DEBIAN/prerm" "$stage/DEBIAN/postrm"
    [[ $pkg != agent ]] || chmod 0600 "$stage/etc/default/edge-agent"
    (cd "$stage" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z \
        | xargs -0 md5sum) > "$stage/DEBIAN/md5sums"

    local size
    size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
    {
        echo "Package: $name"
        echo "Version: $DEB_VERSION"
        echo "Architecture: $ARCH"
        echo "Maintainer: $MAINTAINER"
        echo "Installed-Size: $size"
        echo "Depends: python3 (>= $PY_MINOR), python3 (<< $NEXT_MINOR), passwd"
        [[ -z $sn_minor ]] || echo "Suggests: python$sn_minor-venv"
        echo "Section: net"
        echo "Priority: optional"
        echo "Description: $summary"
        sed 's/^/ /' <<< "$details"
        echo " ."
        echo " Self-contained for boxes without network access: the package carries every"
        echo " Python wheel it needs ($prefix/wheels, for Python $PY_MINOR) and builds its"
        echo " environment in $prefix/venv from them at configure time."
        if [[ -n $sn_minor ]]; then
            echo " ."
            echo " Federated learning: the Flower SuperNode needs Python 3.11+, so it runs in a"
            echo " venv of its own ($prefix/venv/supernode), built at configure time from"
            echo " $prefix/supernode-wheels when /usr/bin/python$sn_minor is installed (with"
            echo " python$sn_minor-venv; on JetPack 6 from ppa:deadsnakes/ppa)."
        fi
    } > "$stage/DEBIAN/control"

    local deb="$OUT/${name}_${FILE_VERSION}_${ARCH}.deb"
    local zopts=(-Z"$COMP_TYPE")
    [[ -z $COMP_LEVEL ]] || zopts+=(-z"$COMP_LEVEL")
    note "dpkg-deb --build $name ($COMPRESS)"
    dpkg-deb --root-owner-group "${zopts[@]}" --build "$stage" "$deb" >&2
    rm -rf "$stage"
    echo "$deb"
}

for pkg in "${PACKAGES[@]}"; do
    build_package "$pkg"
done
