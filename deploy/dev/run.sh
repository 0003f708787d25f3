#!/usr/bin/env bash
# Starts the whole system on this machine: NATS with JetStream, MinIO and
# Mailpit on loopback, the five services, and the demo data. Called by
# `make run`, which has already installed the tools and built the binaries
# into bin/. Ctrl-C stops everything; data stays under .dataport/.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
bin="$root/bin"
state="$root/.dataport"
logs="$state/logs"
mkdir -p "$state/nats" "$state/minio" "$state/mailpit" "$logs"

http_addr=${DATAPORT_HTTP_ADDR:-127.0.0.1:8080}
nats_port=${DATAPORT_DEV_NATS_PORT:-4222}
minio_port=${DATAPORT_DEV_MINIO_PORT:-9000}
smtp_port=${DATAPORT_DEV_SMTP_PORT:-1025}
mailpit_port=${DATAPORT_DEV_MAILPIT_PORT:-8025}
# DATAPORT_DEV_JAEGER=1 (make run JAEGER=1): Jaeger on its standard ports.
jaeger=${DATAPORT_DEV_JAEGER:-}
[[ $jaeger == 0 ]] && jaeger=
jaeger_ports=()
[[ -n $jaeger ]] && jaeger_ports=(127.0.0.1:4318 127.0.0.1:16685 127.0.0.1:16686)

pidfile="$state/run.pid"
if [[ -f $pidfile ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
  echo "Dataport is already running (pid $(cat "$pidfile")): use that one, or stop it with Ctrl-C in its terminal or 'kill $(cat "$pidfile")'." >&2
  exit 1
fi

port_busy() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }
for hp in "127.0.0.1:$nats_port" "127.0.0.1:$minio_port" "127.0.0.1:$smtp_port" "127.0.0.1:$mailpit_port" "$http_addr" \
          127.0.0.1:8081 127.0.0.1:8082 127.0.0.1:8083 127.0.0.1:8084 "${jaeger_ports[@]}"; do
  if port_busy "${hp%:*}" "${hp##*:}"; then
    echo "Port $hp is already in use by another program; stop it or change the port (see README, 'make run')." >&2
    exit 1
  fi
done
echo $$ >"$pidfile"

pids=()
stop_all() {
  trap - INT TERM EXIT
  echo
  echo "stopping Dataport..."
  # Services first, so they drain and hand work back while NATS is still up.
  for ((i=${#pids[@]}-1; i>=0; i--)); do kill -TERM "${pids[$i]}" 2>/dev/null || true; wait "${pids[$i]}" 2>/dev/null || true; done
  rm -f "$pidfile"
  echo "stopped; data is kept in .dataport/"
  exit 0
}
trap stop_all INT TERM EXIT

# Children get their own session, so a Ctrl-C reaches only this script,
# which then stops them in order: services before NATS.
start() { # name, command...
  local name=$1; shift
  setsid "$@" >"$logs/$name.log" 2>&1 &
  pids+=($!)
}
wait_http() { # name url
  for _ in $(seq 1 150); do
    if curl -fsS -o /dev/null "$2" 2>/dev/null; then return 0; fi
    sleep 0.2
  done
  echo "$1 did not become ready; see $logs/$1.log" >&2
  tail -20 "$logs/$1.log" >&2 || true
  exit 1
}

start nats "$bin/nats-server" -js -a 127.0.0.1 -p "$nats_port" -m 8222 -sd "$state/nats"
MINIO_ROOT_USER=minioadmin MINIO_ROOT_PASSWORD=minioadmin MINIO_BROWSER=off \
  start minio "$bin/minio" server --address "127.0.0.1:$minio_port" --console-address 127.0.0.1:9001 "$state/minio"
start mailpit "$bin/mailpit" --smtp "127.0.0.1:$smtp_port" --listen "127.0.0.1:$mailpit_port" --database "$state/mailpit/mailpit.db"
wait_http nats "http://127.0.0.1:8222/healthz"
wait_http minio "http://127.0.0.1:$minio_port/minio/health/live"
wait_http mailpit "http://127.0.0.1:$mailpit_port/livez"
if [[ -n $jaeger ]]; then
  start jaeger "$bin/jaeger" --config "$root/deploy/dev/jaeger.yaml"
  wait_http jaeger "http://127.0.0.1:16686/"
  # Traces only: Jaeger takes no metrics, which stay on each /metrics.
  export OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318
  export OTEL_METRICS_EXPORTER=none
  export OTEL_BSP_SCHEDULE_DELAY=${OTEL_BSP_SCHEDULE_DELAY:-1000}
fi

# A developer machine: the services accept their built-in development link
# and webhook keys here (and refuse them anywhere else).
export DATAPORT_ENV="${DATAPORT_ENV:-development}"
export DATAPORT_NATS_URL="nats://127.0.0.1:$nats_port"
export DATAPORT_S3_ENDPOINT="127.0.0.1:$minio_port"
export DATAPORT_SMTP_PORT="$smtp_port"
export DATAPORT_HTTP_ADDR="$http_addr"
export DATAPORT_PUBLIC_URL="${DATAPORT_PUBLIC_URL:-http://$http_addr}"

DATAPORT_HEALTH_ADDR=127.0.0.1:8081 start room-exporter "$bin/dataport-room-exporter"
DATAPORT_HEALTH_ADDR=127.0.0.1:8084 start record-exporter "$bin/dataport-record-exporter"
DATAPORT_HEALTH_ADDR=127.0.0.1:8082 start archiver "$bin/dataport-archiver"
DATAPORT_HEALTH_ADDR=127.0.0.1:8083 start notifier "$bin/dataport-notifier"
start gateway "$bin/dataport-gateway"
wait_http gateway "http://$http_addr/readyz"
wait_http room-exporter "http://127.0.0.1:8081/readyz"
wait_http record-exporter "http://127.0.0.1:8084/readyz"
wait_http archiver "http://127.0.0.1:8082/readyz"
wait_http notifier "http://127.0.0.1:8083/readyz"

echo "seeding demo data (idempotent)..."
DATAPORT_DEV_DIR="$state/dev" "$bin/dataport-seed" >"$logs/seed.log" 2>&1 || { cat "$logs/seed.log" >&2; exit 1; }

creds="$state/dev/credentials.json"
admin_id=$(grep -o '"userId": *"[^"]*"' "$creds" | head -1 | sed 's/.*"\([^"]*\)"$/\1/')
admin_token=$(grep -o '"authToken": *"[^"]*"' "$creds" | head -1 | sed 's/.*"\([^"]*\)"$/\1/')
cat <<TXT

Dataport is running.
  gateway:     http://$http_addr
  web console: $DATAPORT_PUBLIC_URL/console/   (sign in with user id $admin_id and token $admin_token)
  Mailpit UI:  http://127.0.0.1:$mailpit_port   (every email the notifier sends)
  logs:        $logs/
  metrics:     http://$http_addr/metrics, http://127.0.0.1:808{1,2,3,4}/metrics
  credentials: $creds   (seed counts: $state/dev/seed.json)

Export the #general room as JSON:
  curl -s -X POST 'http://$http_addr/api/v1/rooms.export' \\
    -H 'X-User-Id: $admin_id' -H 'X-Auth-Token: $admin_token' \\
    -H 'Content-Type: application/json' \\
    -d '{"rid": "GENERAL", "type": "file", "format": "json"}'
Then poll it (replace EXPORT_ID with the "exportId" it answers):
  curl -s 'http://$http_addr/v1/exports/EXPORT_ID' -H 'X-User-Id: $admin_id' -H 'X-Auth-Token: $admin_token'
Or with the CLI (make run built it into bin/; go install dataport.dev/shared/cmd/dataport puts it on your PATH), watched live and downloaded:
  DATAPORT_URL=http://$http_addr DATAPORT_USER=$admin_id DATAPORT_TOKEN=$admin_token $bin/dataport export room GENERAL --download ./out

TXT
if [[ -n $jaeger ]]; then
  cat <<TXT
Traces: Jaeger at http://127.0.0.1:16686. Every answer's X-Trace-Id, and a
job's "traceId", is the trace to look up:
  curl -s http://127.0.0.1:16686/api/traces/TRACE_ID
(a Jaeger built from source has no UI assets, so the page itself is a
placeholder; the query API answers, and a Jaeger UI elsewhere can use it.)

TXT
fi
echo "Press Ctrl-C to stop."
wait -n "${pids[@]}" || true
echo "a process exited unexpectedly; see $logs/" >&2
exit 1
