#!/bin/sh
# Builds llama.cpp's own llama-server, the benchmark's reference peer, from the
# llama.cpp sources vendored in the pinned llama-cpp-python sdist (from PyPI),
# so both sides run the same llama.cpp. About 5 minutes on 2 cores.
# It is compiled with the same CMAKE_ARGS as the agent's llama-cpp-python (the
# Makefile passes its own: `make llama-server`), so both run the same CPU kernels;
# a server built with cmake's defaults (GGML_NATIVE=ON: AVX-512, VNNI, AMX) against
# the agent's AVX2 build compares compilers' flags, not servers.
# Usage: [CMAKE_ARGS=...] bench/build_llama_server.sh [OUT_DIR]   (default: build/llama-server)
set -eu
OUT=${1:-build/llama-server}
VERSION=$(python3 -c "import re;print(re.search(r'llama-cpp-python==([0-9.]+)', open('pyproject.toml').read()).group(1))")
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
python3 -m pip download --quiet --no-deps --no-binary :all: "llama-cpp-python==$VERSION" -d "$WORK"
tar -xzf "$WORK"/llama_cpp_python-"$VERSION".tar.gz -C "$WORK"
SRC="$WORK/llama_cpp_python-$VERSION/vendor/llama.cpp"
# CMAKE_ARGS is a list of -D flags, split on spaces as pip's build of llama-cpp-python splits it.
# shellcheck disable=SC2086
cmake -S "$SRC" -B "$WORK/build" -DCMAKE_BUILD_TYPE=Release -DLLAMA_BUILD_SERVER=ON \
      -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_CURL=OFF -DBUILD_SHARED_LIBS=OFF \
      ${CMAKE_ARGS:-} >/dev/null
cmake --build "$WORK/build" --target llama-server -j "$(nproc)"
mkdir -p "$OUT"
cp "$WORK/build/bin/llama-server" "$OUT/"
printf '%s\n' "${CMAKE_ARGS:-}" > "$OUT/cmake_args"
echo "built $OUT/llama-server (CMAKE_ARGS: ${CMAKE_ARGS:-none})"
