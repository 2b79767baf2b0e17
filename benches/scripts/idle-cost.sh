#!/usr/bin/env bash
# Usage: benches/scripts/idle-cost.sh target/release/acs   (WARM, MEASURE, BASE: seconds, seconds, first port)
# Idle cost of one exchange server with zero users at the doc's settings
# (store_capacity 10000, payload_words 32, expiry 100, 1 s window): CPU, disk writes,
# RSS, database size over MEASURE seconds after WARM seconds.
set -euo pipefail
ACS=${1:?acs binary}; WARM=${WARM:-20}; MEASURE=${MEASURE:-60}; BASE=${BASE:-27300}
D=$(mktemp -d); cd "$D"
"$ACS" certs --out certs --exchanges 3 --entries 3 >/dev/null
for i in 0 1 2; do "$ACS" master --out master-$i.key --cert certs/exchange-$i.pem >/dev/null; done
for i in 0 1 2; do
  cat > ex$i.toml <<T
index = $i
deployment = "idle"
relay_listen = "127.0.0.1:$((BASE+i))"
peer_listen = "127.0.0.1:$((BASE+10+i))"
next_peer = "127.0.0.1:$((BASE+10+(i+1)%3))"
relays = [0, 1, 2]
ca = "certs/ca.pem"
cert = "certs/exchange-$i.pem"
key = "certs/exchange-$i-key.pem"
master = "master-$i.key"
db = "ex$i.redb"
[round]
payload_words = 32
store_capacity = 10000
expiry_rounds = 100
[timing]
submit_window_ms = 1000
collect_grace_ms = 2000
T
  cat > entry$i.toml <<T
index = $i
listen = "127.0.0.1:$((BASE+20+i))"
exchanges = ["127.0.0.1:$((BASE))", "127.0.0.1:$((BASE+1))", "127.0.0.1:$((BASE+2))"]
ca = "certs/ca.pem"
cert = "certs/entry-$i.pem"
key = "certs/entry-$i-key.pem"
T
done
pids=()
for i in 0 1 2; do RUST_LOG=info "$ACS" exchange --config ex$i.toml > ex$i.log 2>&1 & pids+=($!); done
for i in 0 1 2; do RUST_LOG=info "$ACS" entry --config entry$i.toml > entry$i.log 2>&1 & pids+=($!); done
trap 'kill ${pids[@]} 2>/dev/null; rm -rf "$D"' EXIT
sleep "$WARM"
P=${pids[0]}
tick=$(getconf CLK_TCK)
read_io() { awk '/^write_bytes/ {print $2}' /proc/$P/io; }
read_cpu() { awk '{print $14+$15}' /proc/$P/stat; }
w0=$(read_io); c0=$(read_cpu); r0=$(grep -c "round committed" ex0.log || true)
sleep "$MEASURE"
w1=$(read_io); c1=$(read_cpu); r1=$(grep -c "round committed" ex0.log || true)
rss=$(awk '/VmRSS/ {print $2}' /proc/$P/status)
db=$(stat -c %s ex0.redb)
echo "rounds committed in ${MEASURE}s: $((r1-r0))"
echo "cpu: $(( (c1-c0) * 100 / tick / MEASURE ))% of one core"
echo "disk writes: $(( (w1-w0) / 1024 / MEASURE )) KiB/s"
echo "rss: $((rss/1024)) MiB; db: $((db/1024/1024)) MiB"
grep "round committed" ex0.log | tail -2
