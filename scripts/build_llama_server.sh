#!/usr/bin/env bash
# Build llama.cpp's llama-server (CPU only) from the llama-cpp-python source distribution.
#
# The sdist vendors llama.cpp under vendor/llama.cpp; we build only the llama-server target
# into a cache directory outside the repository, once, and reuse it on later runs.
#
# Usage: scripts/build_llama_server.sh [VERSION] [native|portable] [CMAKE_OPTION ...]
#   native (default): GGML_NATIVE=ON, tuned to this CPU, into build/.
#   portable: GGML_NATIVE=OFF plus the given options (e.g. -DGGML_AVX2=ON -DGGML_AMX_TILE=OFF),
#     into build-portable/. `tokenmill bench compare` falls back to it when the native binary
#     crashes at start (seen on AMX CPUs) and passes the options the CPU supports.
# Env:   TOKENMILL_CACHE (default ~/.cache/tokenmill), PYTHON (default .venv/bin/python or python3),
#        JOBS (default nproc).
# Prints the path of the built binary on its last line.
set -euo pipefail

VERSION="${1:-0.3.36}"
MODE="${2:-native}"
shift $(( $# < 2 ? $# : 2 ))
case "$MODE" in
  native) BUILD_DIR=build; CPU_OPTS=(-DGGML_NATIVE=ON) ;;
  portable) BUILD_DIR=build-portable; CPU_OPTS=(-DGGML_NATIVE=OFF "$@") ;;
  *) echo "build_llama_server: mode must be native or portable, got '$MODE'" >&2; exit 2 ;;
esac
CACHE="${TOKENMILL_CACHE:-$HOME/.cache/tokenmill}"
ROOT="$CACHE/llama.cpp-$VERSION"
BIN="$ROOT/$BUILD_DIR/bin/llama-server"
REPO="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-}"
if [[ -z "$PYTHON" ]]; then
  if [[ -x "$REPO/.venv/bin/python" ]]; then PYTHON="$REPO/.venv/bin/python"; else PYTHON=python3; fi
fi
JOBS="${JOBS:-$(nproc)}"

if [[ -x "$BIN" ]]; then
  echo "$BIN"
  exit 0
fi

for tool in cmake c++; do
  command -v "$tool" >/dev/null || { echo "build_llama_server: '$tool' not found; install it (apt-get install cmake g++)" >&2; exit 1; }
done

mkdir -p "$ROOT"
SDIST_DIR="$ROOT/sdist"
if [[ ! -d "$ROOT/src" ]]; then
  mkdir -p "$SDIST_DIR"
  if ! ls "$SDIST_DIR"/llama_cpp_python-"$VERSION".tar.gz >/dev/null 2>&1; then
    # Only llama-cpp-python itself as source: its build tools may come as wheels (building
    # them from source too, as --no-binary :all: does, takes many minutes).
    "$PYTHON" -m pip download --no-deps --no-binary llama-cpp-python \
      "llama-cpp-python==$VERSION" -d "$SDIST_DIR" >&2
  fi
  tarball="$SDIST_DIR/llama_cpp_python-$VERSION.tar.gz"
  tmp="$ROOT/extract.tmp"
  rm -rf "$tmp" && mkdir -p "$tmp"
  tar -xzf "$tarball" -C "$tmp"
  mv "$tmp"/llama_cpp_python-*/vendor/llama.cpp "$ROOT/src"
  rm -rf "$tmp" "$SDIST_DIR"
fi

GEN=()
command -v ninja >/dev/null && GEN=(-G Ninja)
cmake -S "$ROOT/src" -B "$ROOT/$BUILD_DIR" "${GEN[@]}" \
  -DCMAKE_BUILD_TYPE=Release \
  -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
  -DGGML_CUDA=OFF -DGGML_METAL=OFF -DGGML_VULKAN=OFF "${CPU_OPTS[@]}" \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON \
  -DBUILD_SHARED_LIBS=OFF >&2
nice -n 10 cmake --build "$ROOT/$BUILD_DIR" --target llama-server -j "$JOBS" >&2
test -x "$BIN" || { echo "build_llama_server: build finished but $BIN is missing" >&2; exit 1; }
echo "$BIN"
