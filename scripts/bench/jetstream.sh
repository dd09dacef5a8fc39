#!/usr/bin/env bash
# Issue 13: Split ingest over HTTP with the JetStream journal at R1 and R3 on a local three-server
# NATS cluster, beside the file journal, and beside a raw async-nats publish-with-ack loop of the
# same records measured by sluice-load in the same run (BENCHMARKS.md, "Issue 13: JetStream journal").
#
#   scripts/bench/jetstream.sh [SEED...]      # default seeds: 1 2 3
#
# Needs Debian's nats-server (or TEST_NATS_SERVER=path) and curl. BATCHES (300) batches of 1,000
# impressions, CONNECTIONS (8) at once; client ports 24221-24223, routes 26221-26223, monitoring
# 28221-28223 on 127.0.0.1 (BASE_PORT=24220 moves them all).
set -euo pipefail
cd "$(dirname "$0")/../.."

batches=${BATCHES:-300}
connections=${CONNECTIONS:-8}
base=${BASE_PORT:-24220}
nats_server=${TEST_NATS_SERVER:-$(command -v nats-server || echo /usr/sbin/nats-server)}
seeds=("$@")
[ ${#seeds[@]} -gt 0 ] || seeds=(1 2 3)

cargo build --release --quiet --bin sluice-load
load=target/release/sluice-load

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

routes=""
for i in 1 2 3; do routes="$routes nats-route://127.0.0.1:$((base + 2000 + i)),"; done
urls=""
for i in 1 2 3; do
  cat >"$work/n$i.conf" <<EOF
server_name: n$i
listen: 127.0.0.1:$((base + i))
http: 127.0.0.1:$((base + 4000 + i))
log_file: "$work/n$i.log"
jetstream { store_dir: "$work/n$i" }
cluster { name: bench, listen: 127.0.0.1:$((base + 2000 + i)), routes: [${routes%,}] }
EOF
  "$nats_server" -c "$work/n$i.conf" &
  pids+=($!)
  urls="$urls${urls:+,}nats://127.0.0.1:$((base + i))"
done
# /healthz answers ok once the server's JetStream is current with the cluster's meta leader.
for i in 1 2 3; do
  for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$((base + 4000 + i))/healthz" >/dev/null && break
    sleep 0.2
  done
done

for seed in "${seeds[@]}"; do
  echo "== seed $seed: file journal"
  "$load" --batches "$batches" --connections "$connections" --seed "$seed"
  for replicas in 1 3; do
    echo "== seed $seed: JetStream journal, R$replicas ($urls)"
    SLUICE_JOURNAL__URL="$urls" SLUICE_JOURNAL__REPLICAS=$replicas SLUICE_JOURNAL__STREAM="BENCH_R${replicas}_$seed" \
      "$load" --batches "$batches" --connections "$connections" --seed "$seed"
  done
done
