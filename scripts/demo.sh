#!/usr/bin/env bash
# Starts the whole system on the simulators, without Docker, against the local PostgreSQL and
# RabbitMQ: closeio-sandbox (Close + Hull simulators), closeio-ingest, closeio-worker and
# closeio-scheduler. Then it asks the Hull simulator to notify the connector about every
# account and user, and shows leads and contacts arriving in the Close simulator and
# closeio/id arriving back on the Hull accounts.
#
#   scripts/demo.sh            # run, show data flowing, keep running until Ctrl-C
#   scripts/demo.sh --once     # run, show data flowing, stop everything and exit
#
# At the end a Close 400 is injected on purpose, to make one dead letter; the script prints the
# ops console's URL and the admin token to log in with, and the dead letter can be inspected and
# replayed there.
#
# Environment: DEMO_DATABASE (default closeio_demo), DEMO_ADMIN_DB_URL
# (postgres://postgres@127.0.0.1:5432/postgres), AMQP_URL, DEMO_ACCOUNTS (default 20),
# DEMO_USERS_PER_ACCOUNT (default 2), ADMIN_TOKEN (default: a random one, printed),
# ADMIN_LISTEN (127.0.0.1:9110). Logs go to .run/*.log.
set -euo pipefail
cd "$(dirname "$0")/.."

ONCE=false
[ "${1:-}" = "--once" ] && ONCE=true

DB_NAME=${DEMO_DATABASE:-closeio_demo}
ADMIN_DB_URL=${DEMO_ADMIN_DB_URL:-postgres://postgres@127.0.0.1:5432/postgres}
# A local demo: the development encryption key is allowed (never set LOCAL_MODE in production).
export LOCAL_MODE=true
export DATABASE_URL=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/$DB_NAME}
export AMQP_URL=${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}
export QUEUE_PREFIX=${QUEUE_PREFIX:-demo}
ACCOUNTS=${DEMO_ACCOUNTS:-20}
USERS_PER_ACCOUNT=${DEMO_USERS_PER_ACCOUNT:-2}

CONNECTOR_ID=5c092905c36af496c700012e
CONNECTOR_SECRET=demo-connector-secret
API_KEY=api_sandbox_key_0001
CLOSE=127.0.0.1:8090
HULL=127.0.0.1:8091
INGEST=127.0.0.1:8082
SEGMENT=5c0000000000000000000201   # the simulator's "Target accounts" segment

mkdir -p .run
PIDS=()
cleanup() {
  for pid in "${PIDS[@]:-}"; do [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

echo "==> building"
cargo build --quiet --bins

echo "==> fresh database $DB_NAME and migrations"
psql "$ADMIN_DB_URL" -qc "DROP DATABASE IF EXISTS $DB_NAME WITH (FORCE)"
psql "$ADMIN_DB_URL" -qc "CREATE DATABASE $DB_NAME"
./target/debug/closeio-ctl migrate
# Start from empty queues too (jobs and dead letters of an earlier demo).
if command -v rabbitmqctl >/dev/null 2>&1; then
  for q in outgoing incoming dead; do rabbitmqctl -q delete_queue "$QUEUE_PREFIX.$q" >/dev/null 2>&1 || true; done
fi
./target/debug/closeio-ctl declare-queues

SETTINGS=$(cat <<JSON
{"api_key":"$API_KEY","synchronized_account_segments":["$SEGMENT"],"lead_status":"hull-default",
 "lead_identifier_hull":"domain","lead_identifier_service":"url",
 "lead_attributes_outbound":[{"hull_field_name":"name","closeio_field_name":"name"}],
 "lead_attributes_inbound":["name","status_id"],
 "contact_attributes_outbound":[{"hull_field_name":"email","closeio_field_name":"emails.office"}],
 "contact_attributes_inbound":["emails","title"]}
JSON
)

echo "==> closeio-sandbox (Close on $CLOSE, Hull on $HULL)"
./target/debug/closeio-sandbox --close-listen $CLOSE --hull-listen $HULL --api-key $API_KEY \
  --hull-connector-id $CONNECTOR_ID --hull-connector-secret $CONNECTOR_SECRET \
  --hull-private-settings "$SETTINGS" --hull-connector-url "http://$INGEST" \
  --hull-seed-accounts "$ACCOUNTS" --hull-users-per-account "$USERS_PER_ACCOUNT" \
  > .run/sandbox.log 2>&1 &
PIDS+=($!)

export CLOSE_API_URL=http://$CLOSE/api/v1
export HULL_PROTOCOL=http
export HULL_FIREHOSE_URL=http://$HULL/api/v1/firehose
export HULL_KEY_HOSTS=$HULL
# Only the simulator's organization is served.
export HULL_ORGANIZATIONS=$HULL
export INGEST_LISTEN=$INGEST
export LOG_FORMAT=${LOG_FORMAT:-pretty}
# The ops console and the JSON admin API (served by the scheduler on ADMIN_LISTEN).
export ADMIN_LISTEN=${ADMIN_LISTEN:-127.0.0.1:9110}
export ADMIN_TOKEN=${ADMIN_TOKEN:-$(python3 -c 'import secrets; print("demo-" + secrets.token_urlsafe(24))')}

wait_http() {
  for _ in $(seq 1 100); do curl -fsS "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "timed out waiting for $1" >&2; return 1
}
wait_http "http://$HULL/_sandbox/state"

echo "==> closeio-ingest on $INGEST, closeio-worker, closeio-scheduler"
./target/debug/closeio-ingest > .run/ingest.log 2>&1 &
PIDS+=($!)
./target/debug/closeio-worker > .run/worker.log 2>&1 &
PIDS+=($!)
./target/debug/closeio-scheduler > .run/scheduler.log 2>&1 &
PIDS+=($!)
wait_http "http://$INGEST/readyz"
wait_http "http://127.0.0.1:9101/readyz"

echo "==> Hull notifies the connector about every account and user (signed smart-notifier calls)"
curl -fsS -X POST "http://$HULL/_sandbox/notify-changed" -H 'content-type: application/json' \
  -d "{\"connector_id\":\"$CONNECTOR_ID\"}" > .run/notify.json
python3 scripts/demo_show.py notify < .run/notify.json

count() { python3 scripts/demo_show.py count $CLOSE; }
echo "==> waiting for the worker"
prev=""
for _ in $(seq 1 120); do
  now=$(count)
  [ -n "$prev" ] && [ "$now" = "$prev" ] && [ "${now%% *}" != "0" ] && break
  prev=$now; sleep 1
done
read -r LEADS CONTACTS <<< "$(count)"

echo
echo "Close simulator now holds $LEADS leads and $CONTACTS contacts, for example:"
python3 scripts/demo_show.py close $CLOSE
echo
echo "Hull simulator: accounts with closeio/id written back by the connector:"
python3 scripts/demo_show.py hull $HULL
echo
./target/debug/closeio-ctl connectors list

echo
echo "==> a dead letter on purpose: Close refuses (400) the lead of a new account"
curl -fsS -X PUT "http://$CLOSE/_sandbox/faults" -H 'content-type: application/json' \
  -d '{"error_rate":1.0,"error_statuses":[400],"routes":["POST /lead/"]}' >/dev/null
REFUSED=$(curl -fsS -X POST "http://$HULL/_sandbox/accounts" -H 'content-type: application/json' \
  -d "{\"domain\":\"refused.example.com\",\"name\":\"Refused by Close\",\"segment_ids\":[\"$SEGMENT\"]}" \
  | python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')
curl -fsS -X POST "http://$HULL/_sandbox/notify" -H 'content-type: application/json' \
  -d "{\"connector_id\":\"$CONNECTOR_ID\",\"channel\":\"account:update\",\"ids\":[\"$REFUSED\"]}" >/dev/null
for _ in $(seq 1 60); do
  ./target/debug/closeio-ctl --json dlq list | grep -q '"id"' && break
  sleep 0.5
done
# Close accepts leads again: the dead letter can now be replayed from the console.
curl -fsS -X PUT "http://$CLOSE/_sandbox/faults" -H 'content-type: application/json' -d '{}' >/dev/null
./target/debug/closeio-ctl dlq list

echo
echo "Ops console: http://$ADMIN_LISTEN/console/"
echo "             log in with the admin token: $ADMIN_TOKEN"
echo "             (Dead letters → the refused account → Replay: the lead appears in Close)"
echo "Hull tab:    http://$INGEST/admin?organization=$HULL&ship=$CONNECTOR_ID&secret=$CONNECTOR_SECRET"
echo "Metrics:    http://$INGEST/metrics  http://127.0.0.1:9101/metrics  http://127.0.0.1:9102/metrics"
echo "Logs:       .run/*.log"
if $ONCE; then exit 0; fi
echo "Running; Ctrl-C stops everything."
wait
