#!/usr/bin/env bash
# Builds the static `echo` binary and the FROM scratch image around it.
#
#   examples/echo/build-image.sh [TAG]      (default TAG: example/echo:latest)
#
# Works from any directory. Uses the engine named by DOCKER_HOST (or the default
# socket). The build is offline: the legacy builder, and a FROM scratch image.
# The static build goes to target/static so it does not invalidate the normal
# build cache in target/.
set -euo pipefail

TAG="${1:-example/echo:latest}"
TARGET_TRIPLE=x86_64-unknown-linux-gnu

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

echo "== building static echo binary ($TARGET_TRIPLE)" >&2
RUSTFLAGS="-C target-feature=+crt-static" CARGO_TARGET_DIR="$ROOT/target/static" \
    cargo build --release -p echo --target "$TARGET_TRIPLE"
BIN="$ROOT/target/static/$TARGET_TRIPLE/release/echo"

# Refuse a dynamically linked binary (one with an ELF interpreter): it would fail
# in a FROM scratch image with a confusing "no such file or directory" at start.
if command -v file >/dev/null 2>&1 && file -L "$BIN" | grep -q 'interpreter'; then
    echo "error: $BIN is not static: $(file -L "$BIN")" >&2
    exit 1
fi

CTX="$(mktemp -d "${TMPDIR:-/tmp}/echo-image.XXXXXX")"
trap 'rm -rf "$CTX"' EXIT
cp "$BIN" "$CTX/echo"
cp "$ROOT/examples/echo/Dockerfile" "$CTX/Dockerfile"

echo "== docker build -t $TAG" >&2
DOCKER_BUILDKIT=0 docker build -t "$TAG" "$CTX" >&2

echo "$TAG"
