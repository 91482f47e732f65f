#!/usr/bin/env bash
# lazyfs self-test: builds the binary, mounts it over a scratch directory and
# checks buffering, read-your-writes, the power cut (FIFO and SIGUSR1), the
# partial-writeback option, unmount/exit, and prints a rough speed figure.
# Needs root, /dev/fuse and python3; fusermount3 (apt: fuse3) is used to
# unmount when present, else umount(8). Bounded in time; removes its mounts
# and scratch directory even on failure.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"

if [[ $(id -u) -ne 0 ]]; then echo "selftest: needs root (mounts FUSE)" >&2; exit 2; fi
[[ -e /dev/fuse ]] || { echo "selftest: /dev/fuse missing" >&2; exit 2; }

if [[ -z "${LAZYFS_BIN:-}" ]]; then
  timeout 900 cargo build --release --quiet
  LAZYFS_BIN="$here/target/release/lazyfs"
fi

work="$(mktemp -d /tmp/lazyfs-selftest.XXXXXX)"
child=
cleanup() {
  if [[ -n "$child" ]]; then kill "$child" 2>/dev/null || true; fi
  # Unmount anything left (lazily, so a stuck server cannot block us), stop
  # any lazyfs still serving this scratch dir, then remove it.
  if grep -q " $work/mnt " /proc/mounts; then
    fusermount3 -u -z "$work/mnt" 2>/dev/null || umount -l "$work/mnt" 2>/dev/null || true
  fi
  if [[ -f "$work/pids" ]]; then
    while read -r pid; do kill "$pid" 2>/dev/null || true; done < "$work/pids"
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap "exit 130" INT
trap "exit 143" TERM

# In the background so that a signal to this script runs the trap at once.
timeout -k 10 "${LAZYFS_SELFTEST_TIMEOUT:-240}" python3 "$here/selftest.py" "$LAZYFS_BIN" "$work" &
child=$!
rc=0
wait "$child" || rc=$?
child=
if [[ $rc -eq 124 || $rc -eq 137 ]]; then echo "lazyfs selftest FAILED: timed out" >&2; fi
exit "$rc"
