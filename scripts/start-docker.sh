#!/usr/bin/env bash
# Makes sure a Docker engine answers on this machine, starting one if needed.
#
#   scripts/start-docker.sh
#
# - If `docker info` already answers (a running engine, or DOCKER_HOST pointing at
#   one), does nothing.
# - Otherwise installs docker.io + iptables with apt if `dockerd` is not on PATH
#   (needs root, or sudo), starts `setsid dockerd` in the background with its log in
#   $DOCKERD_LOG (default /var/log/dockerd.log), and waits up to
#   $DOCKER_START_TIMEOUT seconds (default 60) for `docker info` to answer. On
#   timeout it prints the tail of the dockerd log and fails.
# The engine is left running; stop it with `kill "$(cat /var/run/docker.pid)"`.
# Used by scripts/test.sh (and so .ci/run); safe to run by hand, and to run again.
set -euo pipefail

DOCKERD_LOG="${DOCKERD_LOG:-/var/log/dockerd.log}"
DOCKER_START_TIMEOUT="${DOCKER_START_TIMEOUT:-60}"
DOCKERD_PIDFILE=/var/run/docker.pid

say() { echo "start-docker: $*" >&2; }

engine_answers() {
    timeout 10 docker info >/dev/null 2>&1
}

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        say "need root (or sudo) to run: $*"
        exit 1
    fi
}

if command -v docker >/dev/null 2>&1 && engine_answers; then
    say "engine already answers ($(docker version --format '{{.Server.Version}} (API {{.Server.APIVersion}})' 2>/dev/null || echo '?'))"
    exit 0
fi

if [ -n "${DOCKER_HOST:-}" ] && [ "${DOCKER_HOST}" != "unix:///var/run/docker.sock" ]; then
    say "DOCKER_HOST=$DOCKER_HOST does not answer; not starting a local engine for it"
    exit 1
fi

if ! command -v dockerd >/dev/null 2>&1 || ! command -v docker >/dev/null 2>&1; then
    say "dockerd (or the docker client) not found: installing docker.io and iptables with apt"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update </dev/null
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y docker.io iptables </dev/null
    # Where systemd runs, the package starts its own engine: use it if it answers.
    if engine_answers; then
        say "engine started by the docker.io package answers"
        exit 0
    fi
fi

# A dockerd that is already starting (live pid in its pidfile): wait for it rather
# than start a second one. A pidfile left by a dead dockerd would block the start.
already_running=false
if [ -s "$DOCKERD_PIDFILE" ]; then
    pid="$(cat "$DOCKERD_PIDFILE")"
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        say "dockerd (pid $pid) is running but not answering yet; waiting for it"
        already_running=true
    else
        say "removing stale $DOCKERD_PIDFILE"
        as_root rm -f "$DOCKERD_PIDFILE"
    fi
fi

if ! $already_running; then
    say "starting dockerd (log: $DOCKERD_LOG)"
    if [ "$(id -u)" -eq 0 ]; then
        setsid dockerd >"$DOCKERD_LOG" 2>&1 </dev/null &
    else
        sudo sh -c "setsid dockerd >'$DOCKERD_LOG' 2>&1 </dev/null &"
    fi
fi

start=$SECONDS
until engine_answers; do
    if (( SECONDS - start >= DOCKER_START_TIMEOUT )); then
        say "engine did not answer within ${DOCKER_START_TIMEOUT}s; last lines of $DOCKERD_LOG:"
        tail -n 40 "$DOCKERD_LOG" >&2 || true
        exit 1
    fi
    sleep 0.5
done
say "engine answers after $(( SECONDS - start ))s ($(docker version --format '{{.Server.Version}} (API {{.Server.APIVersion}})' 2>/dev/null || echo '?'))"
