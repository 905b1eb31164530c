#!/usr/bin/env bash
# Builds the static `berth` binary and the FROM scratch operator image around it.
#
#   scripts/build-operator-image.sh [TAG]      (default TAG: berth/operator:<workspace version>)
#
# Works from any directory. Uses the engine named by DOCKER_HOST (or the default socket).
# The build is offline: the legacy builder (DOCKER_BUILDKIT=0) and a FROM scratch image,
# with the repository root as context, trimmed by .dockerignore to the one binary.
# The static build goes to target/static so it does not invalidate the normal build cache
# in target/; the image gets a stripped copy of the binary (target/static/operator-image/berth,
# about a quarter smaller: no symbol table). cargo is $CARGO when set (as under `cargo test`),
# else the one on PATH. Prints the tag on stdout; progress goes to stderr.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

VERSION="$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' Cargo.toml | head -n1)"
TAG="${1:-berth/operator:${VERSION:?cannot read the workspace version from Cargo.toml}}"
TARGET_TRIPLE=x86_64-unknown-linux-gnu
BIN="target/static/$TARGET_TRIPLE/release/berth"
# What the Dockerfile copies (and the only file .dockerignore lets into the context).
IMAGE_BIN="target/static/operator-image/berth"

command -v strip >/dev/null 2>&1 || { echo "error: strip not found (Debian: apt-get install binutils)" >&2; exit 1; }

echo "== building static berth binary ($TARGET_TRIPLE)" >&2
RUSTFLAGS="-C target-feature=+crt-static" CARGO_TARGET_DIR="$ROOT/target/static" \
    "${CARGO:-cargo}" build --release --locked --target "$TARGET_TRIPLE" -p berth --bin berth >&2

# Refuse a dynamically linked binary (one with an ELF interpreter): it would fail in a
# FROM scratch image with a confusing "no such file or directory" at start.
if command -v file >/dev/null 2>&1 && file -L "$BIN" | grep -q 'interpreter'; then
    echo "error: $BIN is not static: $(file -L "$BIN")" >&2
    exit 1
fi

mkdir -p "$(dirname "$IMAGE_BIN")"
strip --strip-all -o "$IMAGE_BIN" "$BIN"

echo "== docker build -t $TAG" >&2
DOCKER_BUILDKIT=0 docker build -f "$ROOT/Dockerfile" -t "$TAG" "$ROOT" >&2

SIZE="$(docker image inspect --format '{{.Size}}' "$TAG")"
echo "== $TAG: $SIZE bytes" >&2
echo "$TAG"
