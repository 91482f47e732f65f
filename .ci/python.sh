#!/usr/bin/env bash
# The Python client (clients/python): built from proto/ (grpcio-tools, at
# install), mypy --strict on the package, and pytest against real nodes of
# this checkout's debug binary (built by `cargo test`), including
# examples/python_worker.py and the dashboard in headless Chromium
# (Debian's chromium and chromium-driver, installed here if missing; the
# screenshots' paths are printed). A venv under target/.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromedriver >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium chromium-driver
fi
VENV=target/python-venv
if [ ! -x "$VENV/bin/python" ]; then
    if ! python3 -m venv "$VENV" 2>/dev/null; then
        apt-get update -qq && apt-get install -y -qq python3-venv
        python3 -m venv "$VENV"
    fi
fi
"$VENV/bin/pip" install -q --disable-pip-version-check --upgrade pip
# Not editable: the wheel is what a user installs, generated code included.
"$VENV/bin/pip" install -q --disable-pip-version-check --force-reinstall --no-deps ./clients/python
"$VENV/bin/pip" install -q --disable-pip-version-check ./clients/python'[dev]'
# axe-core (the accessibility rules the dashboard test runs on every page),
# from the npm registry, checked against the registry's SHA-1.
AXE=target/axe-core-4.14.1.js
if [ ! -s "$AXE" ]; then
    "$VENV/bin/python" - "$AXE" <<'PY'
import hashlib, io, sys, tarfile, urllib.request
url = "https://registry.npmjs.org/axe-core/-/axe-core-4.14.1.tgz"
data = urllib.request.urlopen(url, timeout=120).read()
assert hashlib.sha1(data).hexdigest() == "14d8a6f3f085afd126b8b5ca1e42e50e17fb1d99", "axe-core tarball checksum"
with tarfile.open(fileobj=io.BytesIO(data)) as t:
    js = t.extractfile("package/axe.min.js").read()
open(sys.argv[1], "wb").write(js)
PY
fi
echo "-- mypy --strict"
(cd clients/python && "../../$VENV/bin/mypy" --strict src)
echo "-- pytest"
LIST=$(mktemp)
DROVER_UI_TESTS=1 DROVER_AXE="$PWD/$AXE" DROVER_SCREENSHOT_LIST="$LIST" DROVER_BIN="$PWD/target/debug/drover" \
    "$VENV/bin/python" -m pytest -q clients/python/tests
cat "$LIST"
