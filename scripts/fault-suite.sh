#!/usr/bin/env bash
# Runs the fault tests at the load the reliability figures are quoted for (2 000 accounts and
# 6 000 users), one scenario at a time, and prints one FAULT-REPORT line per scenario.
#
# CI runs the same tests at 200 accounts / 600 users (the defaults of tests/tests/faults.rs).
# This script takes several minutes, so it is run by hand (or nightly) and its figures are
# recorded in docs/reliability.md.
#
# Requirements: the shared Postgres (127.0.0.1:5432) and RabbitMQ (127.0.0.1:5672) the other
# tests use, and root (the private RabbitMQ node and Postgres cluster of some scenarios run as
# the rabbitmq and postgres users through setpriv).
#
# Overrides: FAULT_ACCOUNTS, FAULT_USERS_PER_ACCOUNT, FAULT_TIMEOUT_SECS, FAULT_OUTAGE_SECS;
# extra arguments select tests by name (e.g. `scripts/fault-suite.sh sigkill`).
set -euo pipefail
cd "$(dirname "$0")/.."

export FAULT_ACCOUNTS="${FAULT_ACCOUNTS:-2000}"
export FAULT_USERS_PER_ACCOUNT="${FAULT_USERS_PER_ACCOUNT:-3}"
export FAULT_TIMEOUT_SECS="${FAULT_TIMEOUT_SECS:-1800}"
export FAULT_OUTAGE_SECS="${FAULT_OUTAGE_SECS:-5}"
export RUST_LOG="${RUST_LOG:-error}"

log="$(mktemp -t fault-suite.XXXXXX)"
trap 'rm -f "$log"' EXIT

status=0
cargo test -p closeio-sync-tests --test faults --test ingest_rabbit_down -- --test-threads=1 --nocapture "$@" 2>&1 \
    | tee "$log" | grep -E '^(test |FAULT-REPORT|test result)|panicked' || status=$?
echo
echo "== figures (load: ${FAULT_ACCOUNTS} accounts x ${FAULT_USERS_PER_ACCOUNT} users) =="
grep -o 'FAULT-REPORT.*' "$log" || echo "no FAULT-REPORT line (did the scenarios run?)"
if grep -q 'test result: FAILED' "$log"; then
    echo "some fault tests FAILED" >&2
    exit 1
fi
exit "$status"
