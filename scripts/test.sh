#!/usr/bin/env bash
# The test command: sets up what the tests need, then runs them. Works from any directory.
#
#   scripts/test.sh              setup, `cargo fmt --all --check`,
#                                `cargo clippy --workspace --all-targets --locked -- -D warnings`,
#                                `cargo test --workspace --locked` (what .ci/run runs)
#   scripts/test.sh ARGS...      setup, then `cargo test --workspace --locked ARGS...` only: no
#                                fmt or clippy (a quick run is not a lint run). With -p/--package
#                                in ARGS, --workspace is left out (it would override -p), e.g.
#                                  scripts/test.sh -p berth --lib                 the pure planner
#                                  scripts/test.sh -p berth-tests --test drift    one suite
#                                  scripts/test.sh -- --nocapture                 all, with output
#
# Setup, on Debian 12 as root (the multi-host test bed needs root anyway): each step checks
# first and installs or starts only what is missing, so a second run prints one line per step.
#   - a Docker engine that answers (scripts/start-docker.sh: installs docker.io, starts dockerd);
#   - apt packages: docker-registry and apache2-utils (htpasswd) for the private-registry
#     tests; busybox-static (a static shell and wget for the healthcheck test images);
#     debootstrap (the real-servers image: scripts/build-servers-image.sh);
#     python3-venv (the manifest test installs PyPI's kubernetes-validate into a venv);
#     binutils (strip, for the operator image); iproute2, util-linux and openssl (the test bed's
#     network namespaces and TLS); gcc and libc6-dev (build scripts and the linker);
#   - kubectl (the manifest test runs `kubectl kustomize`): Debian 12 has no package; when
#     missing it is downloaded from dl.k8s.io (v1.32.0, checked against its published sha256)
#     into /usr/local/bin;
#   - a Rust toolchain (Cargo.toml's rust-version or newer) with rustfmt and clippy. It is not
#     installed for you (rustup is a per-user choice); without cargo the script says how to get
#     it and stops. Missing rustfmt/clippy components are added with rustup when rustup is there.
# Not root and no sudo: a missing package is a failure naming it. Installing needs the
# network; with everything present the script works offline.
#
# The environment passes through (BERTH_TRIALS=100 scripts/test.sh runs the long crash trials;
# see docs/reliability.md). Each step prints a header and its elapsed seconds; the exit status
# is that of the first step that failed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

KUBECTL_VERSION=v1.32.0

section() { printf '\n===== %s =====\n' "$*"; }
say() { echo "test.sh: $*"; }
die() { echo "test.sh: $*" >&2; exit 1; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root (or sudo) to run: $*"
    fi
}

# Runs a step under a header and says how long it took. Called as a plain command, so that
# `set -e` holds inside it (in an `if` or `||` bash would ignore -e in the whole step); a
# failure exits the script, and the EXIT trap names the step that failed.
current_step=""
step_start=$SECONDS
step() {
    current_step="$1"
    shift
    section "$current_step"
    step_start=$SECONDS
    "$@"
    echo "----- ok: $current_step ($(( SECONDS - step_start ))s)"
    current_step=""
}
on_exit() {
    local status=$?
    if [ "$status" -ne 0 ] && [ -n "$current_step" ]; then
        echo "----- FAILED (exit $status): $current_step ($(( SECONDS - step_start ))s)" >&2
    fi
}
trap on_exit EXIT

# --- setup -----------------------------------------------------------------------------------

setup_engine() {
    scripts/start-docker.sh
    docker version --format 'client {{.Client.Version}}, server {{.Server.Version}} (API {{.Server.APIVersion}})'
}

# The apt packages the tests need, each with the check that tells whether it is there.
missing_packages() {
    local missing=()
    command -v docker-registry >/dev/null 2>&1 || missing+=(docker-registry)
    command -v htpasswd >/dev/null 2>&1 || missing+=(apache2-utils)
    # Debian's plain `busybox` is dynamically linked: it would not run in a FROM scratch image.
    [ -x /bin/busybox ] && dpkg -s busybox-static >/dev/null 2>&1 || missing+=(busybox-static)
    # The real-servers image (PostgreSQL, Redis, nginx): scripts/build-servers-image.sh.
    command -v debootstrap >/dev/null 2>&1 || [ -x /usr/sbin/debootstrap ] || missing+=(debootstrap)
    python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
    command -v strip >/dev/null 2>&1 || missing+=(binutils)
    command -v ip >/dev/null 2>&1 || [ -x /usr/sbin/ip ] || [ -x /sbin/ip ] || missing+=(iproute2)
    command -v nsenter >/dev/null 2>&1 || missing+=(util-linux)
    command -v openssl >/dev/null 2>&1 || missing+=(openssl)
    command -v cc >/dev/null 2>&1 || missing+=(gcc libc6-dev)
    if ! command -v kubectl >/dev/null 2>&1; then
        command -v curl >/dev/null 2>&1 || missing+=(curl)
        [ -s /etc/ssl/certs/ca-certificates.crt ] || missing+=(ca-certificates)
    fi
    echo "${missing[@]}"
}

setup_packages() {
    local missing
    missing="$(missing_packages)"
    if [ -z "$missing" ]; then
        echo "present: docker-registry, htpasswd, busybox-static, debootstrap, python3-venv, strip, ip, nsenter, openssl, cc"
        return
    fi
    command -v apt-get >/dev/null 2>&1 || die "missing: $missing (not a Debian machine: install their equivalents)"
    say "installing: $missing"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq </dev/null
    # shellcheck disable=SC2086 # one word per package
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing </dev/null
    missing="$(missing_packages)"
    [ -z "$missing" ] || die "still missing after apt-get install: $missing"
}

setup_kubectl() {
    if command -v kubectl >/dev/null 2>&1; then
        echo "present: $(kubectl version --client 2>/dev/null | head -n1)"
        return
    fi
    local arch
    case "$(uname -m)" in
        x86_64) arch=amd64 ;;
        aarch64) arch=arm64 ;;
        *) die "kubectl not found, and no download known for $(uname -m): install kubectl >= 1.14" ;;
    esac
    local url="https://dl.k8s.io/release/$KUBECTL_VERSION/bin/linux/$arch/kubectl"
    local tmp
    tmp="$(mktemp -d)"
    say "kubectl not found: downloading $url"
    curl -fsSL --retry 3 -o "$tmp/kubectl" "$url"
    curl -fsSL --retry 3 -o "$tmp/kubectl.sha256" "$url.sha256"
    echo "$(cat "$tmp/kubectl.sha256")  $tmp/kubectl" | sha256sum --check --quiet \
        || die "kubectl from $url does not match its published sha256"
    as_root install -m 0755 "$tmp/kubectl" /usr/local/bin/kubectl
    rm -rf "$tmp"
    echo "installed: /usr/local/bin/kubectl ($(kubectl version --client 2>/dev/null | head -n1))"
}

setup_toolchain() {
    # A rustup install not yet on this shell's PATH.
    if ! command -v cargo >/dev/null 2>&1 && [ -x "${CARGO_HOME:-$HOME/.cargo}/bin/cargo" ]; then
        export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
    fi
    if ! command -v cargo >/dev/null 2>&1; then
        die "cargo not found on PATH. Install Rust with rustup (Debian's rustc is too old):
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --component rustfmt,clippy
    . \"\$HOME/.cargo/env\"
then run scripts/test.sh again."
    fi
    if $lint; then
        local components=()
        cargo fmt --version >/dev/null 2>&1 || components+=(rustfmt)
        cargo clippy --version >/dev/null 2>&1 || components+=(clippy)
        if [ "${#components[@]}" -gt 0 ]; then
            command -v rustup >/dev/null 2>&1 \
                || die "cargo ${components[*]} not available, and no rustup to add it: install ${components[*]}"
            say "adding toolchain components: ${components[*]}"
            rustup component add "${components[@]}"
        fi
    fi
    cargo --version
    rustc --version
}

setup() {
    [ "$(id -u)" -eq 0 ] || say "warning: not root; the multi-host test bed tests need root and will fail"
    echo "-- docker engine"
    setup_engine
    echo "-- packages"
    setup_packages
    echo "-- kubectl"
    setup_kubectl
    echo "-- toolchain"
    setup_toolchain
}

# --- the run ---------------------------------------------------------------------------------

# No arguments: the full run with lints. Arguments: a focused test run.
lint=true
[ "$#" -eq 0 ] || lint=false

# --workspace would override a -p/--package given in the arguments (before any `--`).
scope=(--workspace)
for arg in "$@"; do
    [ "$arg" = -- ] && break
    case "$arg" in
        -p | -p?* | --package | --package=*) scope=() ;;
    esac
done

total=$SECONDS
step "setup" setup
if $lint; then
    step "format: cargo fmt --all --check" cargo fmt --all --check
    step "lint: cargo clippy --workspace --all-targets --locked -- -D warnings" \
        cargo clippy --workspace --all-targets --locked -- -D warnings
else
    echo
    echo "(arguments given: fmt and clippy skipped; scripts/test.sh without arguments runs them)"
fi
step "test: cargo test ${scope[*]:+${scope[*]} }--locked $*" cargo test "${scope[@]}" --locked "$@"
section "all ok ($(( SECONDS - total ))s)"
