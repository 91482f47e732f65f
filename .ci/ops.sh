#!/usr/bin/env bash
# Operations checks: the systemd units verify and are hardened, the alert
# rules parse and pass their tests, and a live node's /metrics passes
# `promtool check metrics`. Installs promtool (Debian's prometheus) and
# systemd if missing. Needs target/debug/drover (built by `cargo test`).
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
bin="$PWD/target/debug/drover"
tmp=$(mktemp -d)
trap 'kill "${node:-0}" 2>/dev/null || true; rm -rf "$tmp"' EXIT

echo "-- systemd units"
# Verified as installed, with the binary where this checkout built it.
sed "s|/usr/local/bin/drover|$bin|" systemd/drover.service > "$tmp/drover.service"
sed "s|/usr/local/bin/drover|$bin|" systemd/drover-worker@.service > "$tmp/drover-worker@1.service"
for unit in "$tmp/drover.service" "$tmp/drover-worker@1.service"; do
    systemd-analyze verify "$unit"
    score=$(systemd-analyze security --offline=true "$unit" 2>/dev/null | awk '/Overall exposure level/ {print $(NF-2)}')
    echo "$(basename "$unit"): exposure $score"
    awk -v s="$score" 'BEGIN { exit !(s + 0 < 3.0) }' || { echo "exposure $score is not under 3.0"; exit 1; }
done

# The scaler: a oneshot run as root (it starts and stops units), verified
# with its timer; its exposure is not held to the node's bar.
sed "s|/usr/local/bin/drover|$bin|" systemd/drover-scale@.service > "$tmp/drover-scale@q.service"
cp systemd/drover-scale@.timer "$tmp/drover-scale@q.timer"
systemd-analyze verify "$tmp/drover-scale@q.service" "$tmp/drover-scale@q.timer"
echo "drover-scale@q.service and .timer: verified"

echo "-- alert rules"
promtool check rules config/prometheus/alerts.yml
(cd config/prometheus && promtool test rules alerts_test.yml)

echo "-- promtool check metrics on a live node"
"$bin" serve --data-dir "$tmp/data" --grpc-addr 127.0.0.1:0 --http-addr 127.0.0.1:0 > "$tmp/out" 2> "$tmp/log" &
node=$!
for _ in $(seq 1 100); do
    grep -q ' http=' "$tmp/out" 2>/dev/null && break
    sleep 0.1
done
http=$(grep -o 'http=[^ ]*' "$tmp/out" | head -1 | cut -d= -f2)
grpc=$(grep -o 'grpc=[^ ]*' "$tmp/out" | head -1 | cut -d= -f2)
"$bin" enqueue --server "http://$grpc" --queue q --run r > /dev/null
python3 -c "import sys, urllib.request; sys.stdout.write(urllib.request.urlopen('http://$http/metrics').read().decode())" > "$tmp/metrics"
promtool check metrics < "$tmp/metrics"
echo "metrics: $(grep -c '^# HELP' "$tmp/metrics") described, promtool check metrics passed"
