#!/usr/bin/env bash
# Builds the example application's images on the local Docker engine (or DOCKER_HOST's),
# offline: nothing is pulled.
#
#   examples/app/build.sh        then: berth apply -f examples/app/
#
# 1. The servers image (PostgreSQL 15, Redis, nginx from Debian's packages) with
#    scripts/build-servers-image.sh, if it is missing: the first time this runs debootstrap
#    against this machine's Debian mirror (about two minutes, needs root and `apt-get install
#    debootstrap`); after that it is there, or re-imported from /var/cache/berth-test in seconds.
# 2. FROM it, with the classic builder: berth-example/db:1, berth-example/migrate:1,
#    berth-example/app:1 and berth-example/web:1 (app and web get Debian's static busybox,
#    `apt-get install busybox-static`, for httpd and the healthchecks' wget).
#
# Prints the tags it built, one a line, on stdout. Works from any directory.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
IMAGES="$ROOT/examples/app/images"
VERSION=1
BUSYBOX=/bin/busybox

die() {
    echo "examples/app/build.sh: $*" >&2
    exit 1
}

SERVERS="$("$ROOT/scripts/build-servers-image.sh")"
echo "== servers image: $SERVERS" >&2

for name in db migrate app web; do
    ctx="$(mktemp -d "${TMPDIR:-/tmp}/berth-example-$name.XXXXXX")"
    cp -R "$IMAGES/$name/." "$ctx/"
    if [ "$name" = app ] || [ "$name" = web ]; then
        [ -x "$BUSYBOX" ] && dpkg -s busybox-static >/dev/null 2>&1 \
            || die "$BUSYBOX (Debian's static busybox) is needed for the $name image: apt-get install busybox-static"
        cp "$BUSYBOX" "$ctx/busybox"
    fi
    tag="berth-example/$name:$VERSION"
    echo "== docker build -t $tag" >&2
    if ! DOCKER_BUILDKIT=0 docker build -q --build-arg "SERVERS=$SERVERS" -t "$tag" "$ctx" >/dev/null; then
        rm -rf "$ctx"
        die "docker build of $tag failed (output above)"
    fi
    rm -rf "$ctx"
    echo "$tag"
done
