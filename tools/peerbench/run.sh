#!/usr/bin/env bash
# README's same-run table: drover (one node and three) and its peers with the
# same workloads, one after the other in one window of this noisy machine.
#   apt-get install -y redis-server rabbitmq-server nats-server
#   cargo build --release                       # drover, from the repo root
#   tools/peerbench/run.sh [JOBS] [RUNS]        # defaults 30000 and 3
set -euo pipefail
cd "$(dirname "$0")/../.."
jobs=${1:-30000}
runs=${2:-3}
CARGO_TARGET_DIR=${PEERBENCH_TARGET:-target/peerbench} \
    cargo build --release --manifest-path tools/peerbench/Cargo.toml
peerbench=${PEERBENCH_TARGET:-target/peerbench}/release/peerbench
echo "== drover, one node"
target/release/drover bench --only ping,enq,e2e,lat --jobs "$jobs" --runs "$runs" --rss-jobs 0
echo "== drover, three nodes"
target/release/drover bench --cluster --only ping,enq,e2e,lat --jobs "$jobs" --runs "$runs" --rss-jobs 0
echo "== peers"
"$peerbench" --peers redis,rabbitmq,rabbitmq3,jetstream,jetstream3 --jobs "$jobs" --runs "$runs"
