#!/usr/bin/env bash
# Fuzz what `berth plan` does with a file before it touches a host: parse, validate, resolve,
# plan from empty and from an earlier revision on a simulated host, and the planner's laws
# (fuzz/fuzz_targets/input.rs -> berth::rehearsal). Usage: scripts/fuzz.sh [SECONDS] (300).
#
# The machine has a stable toolchain only. cargo-fuzz works on it with `--sanitizer none`
# (no -Zsanitizer) and RUSTC_BOOTSTRAP=1 (cargo-fuzz passes a few -Z flags to rustc);
# libFuzzer's coverage instrumentation itself (-Cpasses=sancov-module) is stable. Overflow
# checks and debug assertions are on, as cargo-fuzz builds by default.
#
# Seeds: the invalid corpus (tests/data/invalid), the examples, fuzz/seeds and earlier crashes
# (fuzz/regressions). A crash is written to fuzz/artifacts/input/; copy it to
# fuzz/regressions/<what>.yaml, fix berth, and `cargo test -p berth --lib rehearsal` replays it.
set -euo pipefail
seconds="${1:-300}"
cd "$(dirname "$0")/.."

command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked

corpus=fuzz/corpus/input
mkdir -p "$corpus"
# Seeds up to 16 KiB: the large corpus files (enormous values) would only slow every mutation.
find tests/data/invalid examples fuzz/seeds fuzz/regressions -name '*.yaml' -size -16k -exec cp -n {} "$corpus"/ \;

export RUSTC_BOOTSTRAP=1
# The rehearsal asks no engine, but resolves the local endpoint from DOCKER_HOST: never a real one.
export DOCKER_HOST=unix:///nonexistent/fuzz.sock
log=$(mktemp)
set +e
nice -n 19 cargo fuzz run --sanitizer none input "$corpus" -- \
    -max_total_time="$seconds" -max_len=16384 -timeout=10 -rss_limit_mb=2048 \
    -dict=fuzz/berth.dict -print_final_stats=1 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
echo
grep -E '^Done [0-9]+ runs' "$log" || true
if [ "$status" -eq 0 ]; then
    echo "fuzz: clean for ${seconds}s"
else
    echo "fuzz: FAILED (exit $status); the input is in fuzz/artifacts/input/"
fi
rm -f "$log"
exit "$status"
