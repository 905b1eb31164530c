#!/usr/bin/env bash
# Builds (once per machine) the image of real servers from Debian's packages: PostgreSQL 15
# (server and client), Redis and nginx-light, in a Debian bookworm root file system made with
# debootstrap and turned into an image with `docker import`. Nothing is pulled from a registry:
# only the Debian mirror this machine already uses is needed, and only the first time.
#
#   scripts/build-servers-image.sh          make sure the image exists; print its tag (stdout)
#   scripts/build-servers-image.sh --tag    print the tag it would have, build nothing
#
# The one recipe: tests/src/servers.rs (the test harness) and examples/app/build.sh both call
# this script. The tag is `berth/servers:<hash>`, the hash of the recipe (suite, variant,
# packages, mirror, architecture, the clean-up applied to the root file system, the import's
# --change): a machine that kept an image of an older recipe builds the current one instead.
#
# Cache: the root file system's tarball is kept as $BERTH_CACHE_DIR/servers-<hash>.tar
# (default /var/cache/berth-test), so an engine that lost its images re-imports it in seconds
# instead of running debootstrap again (about a minute, and the mirror). Concurrent callers
# (parallel test processes, a user's build.sh) are serialised by `flock` on
# $BERTH_CACHE_DIR/servers.lock and re-check after waiting: the build happens once.
#
# The mirror is the first URI of a `bookworm` stanza in /etc/apt/sources.list.d/debian.sources
# (or a `deb URI bookworm` line of /etc/apt/sources.list); BERTH_DEBIAN_MIRROR overrides it.
# Needs root, debootstrap (`apt-get install debootstrap`; scripts/test.sh installs it), and
# the Docker CLI with an engine that answers.
set -euo pipefail

SUITE=bookworm
VARIANT=minbase
INCLUDE=postgresql-15,postgresql-client-15,redis-server,nginx-light,ca-certificates
CHANGE='ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
REPO=berth/servers
CACHE_DIR="${BERTH_CACHE_DIR:-/var/cache/berth-test}"

die() {
    echo "build-servers-image.sh: $*" >&2
    exit 1
}
say() { echo "build-servers-image.sh: $*" >&2; }

# What is done to the root file system after debootstrap (part of the recipe's hash: bash's
# `declare -f` prints the body without comments). Inside: no downloaded .debs or package
# lists (they only make the image bigger), and no PostgreSQL cluster: the package's
# postinst made /var/lib/postgresql/15/main, and every container makes its own with
# `initdb` in its own volume instead (an image's cluster would be copied into each new
# volume mounted at /var/lib/postgresql).
trim_rootfs() {
    local root="$1"
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
        "$root"/var/lib/postgresql/15 "$root"/etc/postgresql/15
    mkdir -p "$root"/run/postgresql
    chown --reference="$root"/var/lib/postgresql "$root"/run/postgresql
    chmod 2775 "$root"/run/postgresql
}

mirror() {
    if [ -n "${BERTH_DEBIAN_MIRROR:-}" ]; then
        echo "$BERTH_DEBIAN_MIRROR"
        return
    fi
    local uri=""
    if [ -r /etc/apt/sources.list.d/debian.sources ]; then
        # deb822 stanzas, separated by blank lines: the first URI of one whose Suites has bookworm.
        uri="$(awk -v suite="$SUITE" '
            BEGIN { RS = ""; FS = "\n" }
            {
                uris = ""; ok = 0
                for (i = 1; i <= NF; i++) {
                    if ($i ~ /^URIs:/) { split(substr($i, 6), u, " "); for (k in u) if (u[k] != "") { uris = u[k]; break } }
                    if ($i ~ /^Suites:/) { n = split(substr($i, 8), s, " "); for (k = 1; k <= n; k++) if (s[k] == suite) ok = 1 }
                }
                if (ok && uris != "") { print uris; exit }
            }' /etc/apt/sources.list.d/debian.sources)"
    fi
    if [ -z "$uri" ] && [ -r /etc/apt/sources.list ]; then
        uri="$(awk -v suite="$SUITE" '$1 == "deb" && $3 == suite { print $2; exit }' /etc/apt/sources.list)"
    fi
    [ -n "$uri" ] || die "no Debian mirror for $SUITE in /etc/apt/sources.list.d/debian.sources or /etc/apt/sources.list: set BERTH_DEBIAN_MIRROR=http://.../debian"
    echo "$uri"
}

MIRROR="$(mirror)"
ARCH="$(dpkg --print-architecture 2>/dev/null || uname -m)"
RECIPE="suite=$SUITE
variant=$VARIANT
include=$INCLUDE
mirror=$MIRROR
arch=$ARCH
change=$CHANGE
$(declare -f trim_rootfs)"
HASH="$(printf '%s' "$RECIPE" | sha256sum | cut -c1-12)"
TAG="$REPO:$HASH"
TARBALL="$CACHE_DIR/servers-$HASH.tar"

if [ "${1:-}" = --tag ]; then
    echo "$TAG"
    exit 0
fi
[ "$#" -eq 0 ] || die "usage: $0 [--tag]"

command -v docker >/dev/null 2>&1 || die "the Docker CLI is missing: apt-get install docker.io (scripts/start-docker.sh)"
docker info >/dev/null 2>&1 || die "no Docker engine answers: start one with scripts/start-docker.sh"

present() { docker image inspect "$TAG" >/dev/null 2>&1; }

if present; then
    echo "$TAG"
    exit 0
fi

[ "$(id -u)" -eq 0 ] || die "building $TAG needs root (debootstrap, and a root file system owned by its users)"
mkdir -p "$CACHE_DIR"
exec 9>"$CACHE_DIR/servers.lock"
flock -x 9
# Another process may have imported it while we waited for the lock.
if present; then
    echo "$TAG"
    exit 0
fi

if [ ! -s "$TARBALL" ]; then
    command -v debootstrap >/dev/null 2>&1 || [ -x /usr/sbin/debootstrap ] \
        || die "debootstrap is missing: install it with \`apt-get install debootstrap\` (scripts/test.sh does), then run this again"
    PATH="$PATH:/usr/sbin:/sbin"
    ROOTFS="$(mktemp -d "$CACHE_DIR/rootfs.XXXXXX")"
    cleanup() {
        # debootstrap mounts proc and sysfs inside; never recurse into a mount.
        if [ -d "$ROOTFS" ]; then
            awk -v root="$ROOTFS" 'index($2, root "/") == 1 { print $2 }' /proc/mounts | sort -r | while read -r m; do
                umount -l "$m" 2>/dev/null || true
            done
            rm -rf --one-file-system "$ROOTFS"
        fi
        rm -f "$TARBALL.partial" "$ROOTFS.log"
    }
    trap cleanup EXIT
    say "debootstrap $SUITE ($VARIANT, $INCLUDE) from $MIRROR into $ROOTFS"
    start=$SECONDS
    if ! debootstrap --variant="$VARIANT" --include="$INCLUDE" "$SUITE" "$ROOTFS" "$MIRROR" >"$ROOTFS.log" 2>&1; then
        tail -n 30 "$ROOTFS.log" >&2
        [ -f "$ROOTFS/debootstrap/debootstrap.log" ] && tail -n 30 "$ROOTFS/debootstrap/debootstrap.log" >&2
        rm -f "$ROOTFS.log"
        die "debootstrap of $SUITE from $MIRROR failed (output above): is the mirror reachable (\`apt-get update\`), or set BERTH_DEBIAN_MIRROR to one that is"
    fi
    rm -f "$ROOTFS.log"
    say "debootstrap took $((SECONDS - start))s"
    trim_rootfs "$ROOTFS"
    tar -C "$ROOTFS" --numeric-owner -cf "$TARBALL.partial" .
    mv "$TARBALL.partial" "$TARBALL"
    cleanup
    trap - EXIT
    # Tarballs of older recipes are of no use any more.
    find "$CACHE_DIR" -maxdepth 1 -name 'servers-*.tar' ! -name "servers-$HASH.tar" -delete
    say "root file system: $TARBALL ($(du -h "$TARBALL" | cut -f1))"
else
    say "importing the cached root file system $TARBALL"
fi

start=$SECONDS
docker import -c "$CHANGE" -m "berth servers image: $SUITE $VARIANT + $INCLUDE" "$TARBALL" "$TAG" >/dev/null
say "docker import took $((SECONDS - start))s"
present || die "docker import succeeded but $TAG is not on the engine"
echo "$TAG"
