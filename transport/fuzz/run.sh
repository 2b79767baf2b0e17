#!/usr/bin/env bash
# Runs every fuzz target for a bounded time and reports executions and findings.
#
#   transport/fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]     (default 60 s, all targets)
#
# Works on the stable toolchain: RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass its -Z flags
# (sanitizer coverage, AddressSanitizer). ACS_FUZZ_SANITIZER=none builds without ASan
# (faster; the targets are safe Rust, so ASan mostly guards the C parts of dependencies).
# Each target starts from the committed seeds in corpus/<target>/ (made by the make_seeds
# binary when missing) and grows a private corpus in work/<target>/ (ignored by git).
# A crash, leak, timeout or out-of-memory input is copied to regressions/<target>/, which
# `cargo test -p acs-transport --test fuzz_regressions` replays. Logs: logs/<target>.log.
set -uo pipefail
cd "$(dirname "$0")"

secs=${1:-60}
shift || true
sanitizer=${ACS_FUZZ_SANITIZER:-address}
export RUSTC_BOOTSTRAP=1

if ! command -v cargo-fuzz >/dev/null; then
    echo "cargo-fuzz is not installed: cargo install cargo-fuzz" >&2
    exit 2
fi

if [ $# -gt 0 ]; then
    targets=("$@")
else
    # Not `cargo fuzz list`: that also lists the make_seeds helper binary.
    targets=()
    for f in fuzz_targets/*.rs; do
        targets+=("$(basename "$f" .rs)")
    done
fi

for t in "${targets[@]}"; do
    if [ ! -d "corpus/$t" ]; then
        echo "no seeds for $t: writing corpus/ with make_seeds"
        cargo run --quiet --bin make_seeds -- corpus || exit 2
        break
    fi
done

echo "building ${#targets[@]} targets (sanitizer: $sanitizer)"
cargo fuzz build -O -s "$sanitizer" || exit 2

mkdir -p logs
printf '%-28s %12s %8s %10s %8s %8s  %s\n' target runs seconds execs/s cov corpus findings
total_findings=0
for t in "${targets[@]}"; do
    mkdir -p "work/$t" "artifacts/$t"
    log="logs/$t.log"
    start=$(date +%s)
    cargo fuzz run -O -s "$sanitizer" "$t" "work/$t" "corpus/$t" -- \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
        -artifact_prefix="artifacts/$t/" -print_final_stats=1 >"$log" 2>&1
    rc=$?
    elapsed=$(( $(date +%s) - start ))
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
    [ -n "$runs" ] || runs=$(grep -o 'Done [0-9]* runs' "$log" | grep -o '[0-9]*' | tail -1)
    [ -n "$runs" ] || runs=$(grep -oE '^#[0-9]+' "$log" | tail -1 | tr -d '#')
    persec=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
    cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1 | grep -oE '[0-9]+')
    corpus=$(find "work/$t" -type f | wc -l)
    findings=()
    for f in artifacts/"$t"/*; do
        [ -f "$f" ] || continue
        mkdir -p "regressions/$t"
        cp "$f" "regressions/$t/"
        findings+=("$(basename "$f")")
        rm "$f"
    done
    if [ "$rc" -ne 0 ] && [ ${#findings[@]} -eq 0 ]; then
        findings+=("exit $rc without an artifact: see $log")
    fi
    total_findings=$(( total_findings + ${#findings[@]} ))
    printf '%-28s %12s %8s %10s %8s %8s  %s\n' "$t" "${runs:-?}" "$elapsed" "${persec:-?}" \
        "${cov:-?}" "$corpus" "${findings[*]:-none}"
done
echo "findings: $total_findings (saved under regressions/<target>/; logs under logs/)"
[ "$total_findings" -eq 0 ]
