#!/usr/bin/env bash
# The sort scaling table of docs/benchmarks.md: n = 2^10 .. 2^20, 64-bit keys, payload
# 0 and 256 B, quick and bitonic, 1 and 2 threads. One JSON object per run on stdout
# (acs-bench's own line, or a "capped" record when a run passes the time cap).
#
#   cargo build --release -p acs-benches
#   benches/scripts/sort-table.sh > sort-table.jsonl
#
# CAP (seconds, default 120) bounds each run; BIN overrides the binary.
set -u
BIN=${BIN:-${CARGO_TARGET_DIR:-target}/release/acs-bench}
CAP=${CAP:-120}
for algo in quick bitonic; do
  for payload in 0 256; do
    for threads in 2 1; do
      for e in 10 12 14 16 18 20; do
        n=$((1 << e))
        out=$(timeout "$CAP" "$BIN" sort --n "$n" --key-bits 64 --payload "$payload" \
          --algo "$algo" --threads "$threads" --json 2>/dev/null)
        rc=$?
        if [ $rc -eq 0 ]; then
          echo "$out"
        elif [ $rc -eq 124 ]; then
          echo "{\"algo\":\"$algo\",\"n\":$n,\"key_bits\":64,\"payload\":$payload,\"threads\":$threads,\"capped_seconds\":$CAP}"
          # Larger n would only take longer.
          break
        else
          echo "{\"algo\":\"$algo\",\"n\":$n,\"key_bits\":64,\"payload\":$payload,\"threads\":$threads,\"exit\":$rc}"
        fi
      done
    done
  done
done
