#!/bin/sh
# Run by the `demo` service of docker-compose.yml: asks the Hull simulator to notify the
# connector about every seeded account and user, waits for the worker, and prints what arrived.
set -eu
HULL=${DEMO_HULL:-sandbox:8091}
CLOSE=${DEMO_CLOSE:-sandbox:8090}
CONNECTOR=${DEMO_CONNECTOR_ID:-5c092905c36af496c700012e}
echo "notifying the connector about every Hull account and user..."
curl -fsS -X POST "http://$HULL/_sandbox/notify-changed" -H 'content-type: application/json' \
  -d "{\"connector_id\":\"$CONNECTOR\"}"
echo
prev=""
for _ in $(seq 1 120); do
  now=$(curl -fsS "http://$CLOSE/_sandbox/state" | grep -o '"id":"lead_[A-Za-z0-9]*"' | sort -u | wc -l)
  [ "$now" = "$prev" ] && [ "$now" != "0" ] && break
  prev=$now
  sleep 1
done
echo "leads in the Close simulator: $now"
echo "Hull accounts carrying closeio/id: $(curl -fsS "http://$HULL/_sandbox/state" | grep -o '"closeio/id":"lead_' | wc -l)"
closeio-ctl connectors list
