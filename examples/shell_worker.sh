#!/bin/sh
# A shell worker: `drover worker --exec` runs this once per job, the payload
# on stdin and DROVER_JOB_ID, DROVER_QUEUE, DROVER_ATTEMPT... in the
# environment. stdout is the result; exit 0 completes the job, a non-zero
# exit fails it, with the error class from a last stderr line
# `error_class=NAME`; a stderr line `cost_usd=0.01 name=N` reports usage.
#
#   drover serve &
#   drover enqueue --queue upper --payload hello
#   drover worker --queue upper --exec examples/shell_worker.sh
set -eu
payload=$(cat)
if [ -z "$payload" ]; then
    echo "error_class=empty" >&2
    exit 2
fi
printf '%s' "$payload" | tr '[:lower:]' '[:upper:]'
echo "cost_usd=0.0001 chars=${#payload}" >&2
