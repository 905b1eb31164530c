#!/usr/bin/env bash
# The quickstart, offline: build the echo image locally (no registry), build berth, and
# converge the local Docker engine to examples/echo.yaml. Then `curl localhost:9000`.
# Run it again: berth finds nothing to change.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

if ! docker info >/dev/null 2>&1; then
    echo "no Docker engine answers; starting one with scripts/start-docker.sh" >&2
    scripts/start-docker.sh
fi

echo "--- building the echo image (static binary, FROM scratch)" >&2
examples/echo/build-image.sh >/dev/null

echo "--- building berth" >&2
cargo build --release --locked -p berth --bin berth

echo "--- berth apply -f examples/echo.yaml" >&2
target/release/berth apply -f examples/echo.yaml

printf -- '--- curl -s localhost:9000\n' >&2
for _ in $(seq 1 50); do
    if out="$(curl -fsS localhost:9000 2>/dev/null)"; then
        echo "$out"
        exit 0
    fi
    sleep 0.1
done
echo "localhost:9000 did not answer; see: target/release/berth status -f examples/echo.yaml" >&2
exit 1
