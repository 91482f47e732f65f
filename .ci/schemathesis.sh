#!/usr/bin/env bash
# Runs schemathesis (from PyPI) against the OpenAPI document a real node
# serves: no 5xx, no response that breaks the schema. Needs the debug
# binary (cargo build) and Python 3; installs python3-venv if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=target/schemathesis-venv
if [ ! -x "$VENV/bin/st" ]; then
    if ! python3 -m venv "$VENV" 2>/dev/null; then
        apt-get update -qq && apt-get install -y -qq python3-venv
        python3 -m venv "$VENV"
    fi
    "$VENV/bin/pip" install -q --disable-pip-version-check 'schemathesis==4.32.5'
fi
DIR=$(mktemp -d)
trap 'kill "$NODE" 2>/dev/null || true; rm -rf "$DIR"' EXIT
TOKEN_LINE=$(target/debug/drover token new --name schemathesis --role admin)
TOKEN=$(printf '%s\n' "$TOKEN_LINE" | grep -o 'drv_[0-9a-f]*' | head -1)
HASH=$(printf '%s\n' "$TOKEN_LINE" | grep -o 'sha256:[0-9a-f]*' | head -1)
cat > "$DIR/node.toml" <<TOML
data_dir = "$DIR/data"
grpc_addr = "127.0.0.1:0"
http_addr = "127.0.0.1:0"
[log]
level = "warn"
[[tokens]]
name = "schemathesis"
role = "admin"
hash = "$HASH"
TOML
target/debug/drover serve --config "$DIR/node.toml" > "$DIR/ready" 2> "$DIR/node.log" &
NODE=$!
for _ in $(seq 1 100); do
    grep -q ready "$DIR/ready" 2>/dev/null && break
    sleep 0.1
done
HTTP=$(grep -o 'http=[0-9.:]*' "$DIR/ready" | cut -d= -f2)
# Adding a member makes the node dial the address given: schemathesis would
# send it anywhere. Removing members and moving leadership on a one-node
# cluster answers "no leader" (503) while it settles, by design.
timeout 900 "$VENV/bin/st" run "http://$HTTP/api/v1/openapi.json" \
    --checks not_a_server_error,response_schema_conformance \
    --header "Authorization: Bearer $TOKEN" \
    --max-examples 100 --phases examples,coverage,fuzzing \
    --generation-deterministic --no-color \
    --exclude-name 'POST /api/v1/cluster/members' \
    --exclude-name 'DELETE /api/v1/cluster/members/{id}' \
    --exclude-name 'POST /api/v1/cluster/transfer-leader'
