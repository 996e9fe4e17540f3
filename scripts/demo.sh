#!/usr/bin/env bash
# A local demo cluster: 3 real engines (each in its own network namespace),
# a local etcd, `swarm join` for each engine, and three replicated managers
# on 127.0.0.1:4000, :4001 and :4002 (one primary, two replicas).
#   scripts/demo.sh up [--tls]  install, build, start, print the DOCKER_HOST lines
#   scripts/demo.sh down        stop everything it started
# With --tls the engines serve only TLS (dockerd --tlsverify on :2376) and the
# managers too (swarm manage --tlsverify), all with certificates of one
# throw-away CA made by the testbed under /tmp/swarm-demo/tls; the printed
# lines then carry DOCKER_TLS_VERIFY and DOCKER_CERT_PATH.
set -euo pipefail
cd "$(dirname "$0")/.."

ENGINES_DIR=/tmp/swarm-demo
STATE_DIR=/tmp/swarm-demo-state
ETCD_PORT=${SWARM_DEMO_ETCD_PORT:-23790}
PORTS=(4000 4001 4002)

# Starts a detached process, logging to $STATE_DIR/<name>.log, PID in <name>.pid.
start() {
  local name=$1
  shift
  setsid "$@" >"$STATE_DIR/$name.log" 2>&1 </dev/null &
  echo $! >"$STATE_DIR/$name.pid"
}

up() {
  local tls=0
  [ $# -le 1 ] || usage
  case "${1:-}" in
    --tls) tls=1 ;;
    "") ;;
    *) usage ;;
  esac
  if [ -d "$STATE_DIR" ]; then
    echo "demo already running; 'scripts/demo.sh down' first" >&2
    exit 1
  fi
  scripts/install-deps.sh
  cargo build --release --bin swarm
  rm -rf "$ENGINES_DIR"
  mkdir -p "$STATE_DIR"
  local out testbed_tls=()
  if [ "$tls" = 1 ]; then testbed_tls=(--tls); fi
  out=$(scripts/testbed.sh up --dir "$ENGINES_DIR" --engines 3 --registry "${testbed_tls[@]}" \
    --label node-01:storage=ssd --label node-02:storage=disk --label node-03:storage=ssd)
  local registry
  registry=$(awk '$1=="registry" {print $2}' <<<"$out")
  # With --tls the managers serve on 127.0.0.1 and call the engines with the
  # testbed's client certificate (SAN IP:127.0.0.1, serverAuth+clientAuth),
  # which the Docker CLI uses too.
  local certs="" manager_tls=() curl_tls=() scheme=http
  if [ "$tls" = 1 ]; then
    certs="$(awk '$1=="tls" {print $2}' <<<"$out")/client"
    manager_tls=(--tlsverify --tlscacert "$certs/ca.pem" --tlscert "$certs/cert.pem" --tlskey "$certs/key.pem")
    curl_tls=(--cacert "$certs/ca.pem" --cert "$certs/cert.pem" --key "$certs/key.pem")
    scheme=https
  fi

  start etcd etcd --name demo --data-dir "$STATE_DIR/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$((ETCD_PORT + 1))" \
    --initial-advertise-peer-urls "http://127.0.0.1:$((ETCD_PORT + 1))" \
    --initial-cluster "demo=http://127.0.0.1:$((ETCD_PORT + 1))"
  for _ in $(seq 1 50); do
    curl -sf "http://127.0.0.1:$ETCD_PORT/health" >/dev/null && break
    sleep 0.2
  done
  local discovery="etcd://127.0.0.1:$ETCD_PORT/demo"

  local i=0
  while read -r _ name addr _; do
    i=$((i + 1))
    start "join-$name" target/release/swarm join --advertise "$addr" --heartbeat 5s --ttl 15s "$discovery"
  done < <(grep '^engine ' <<<"$out")

  for port in "${PORTS[@]}"; do
    start "manager-$port" target/release/swarm manage -H "tcp://127.0.0.1:$port" "${manager_tls[@]}" \
      --replication --advertise "127.0.0.1:$port" "$discovery"
  done
  for port in "${PORTS[@]}"; do
    for _ in $(seq 1 50); do
      curl -sf "${curl_tls[@]}" "$scheme://127.0.0.1:$port/_ping" >/dev/null && break
      sleep 0.2
    done
  done
  # Everything must still run (a port already in use makes a manager exit).
  for pidfile in "$STATE_DIR"/*.pid; do
    if ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
      local name
      name=$(basename "$pidfile" .pid)
      echo "demo: $name did not start:" >&2
      tail -5 "$STATE_DIR/$name.log" >&2
      down
      exit 1
    fi
  done
  echo
  echo "Discovery: $discovery   (registry for pull/push: $registry)"
  echo "Logs: $STATE_DIR/*.log"
  echo
  echo "Three managers; any of them serves the cluster:"
  for port in "${PORTS[@]}"; do
    if [ "$tls" = 1 ]; then
      echo "  export DOCKER_TLS_VERIFY=1 DOCKER_CERT_PATH=$certs DOCKER_HOST=tcp://127.0.0.1:$port"
    else
      echo "  export DOCKER_HOST=tcp://127.0.0.1:$port"
    fi
  done
}

down() {
  if [ -d "$STATE_DIR" ]; then
    for pidfile in "$STATE_DIR"/*.pid; do
      [ -f "$pidfile" ] || continue
      local pid
      pid=$(cat "$pidfile")
      # Only our own processes: the PID must still be swarm or etcd.
      if grep -qE 'swarm|etcd' "/proc/$pid/cmdline" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
      fi
    done
    sleep 1
    rm -rf "$STATE_DIR"
  fi
  scripts/testbed.sh down --dir "$ENGINES_DIR"
  echo "demo stopped"
}

usage() {
  echo "usage: scripts/demo.sh up [--tls] | down" >&2
  exit 2
}

case "${1:-}" in
  up) up "${@:2}" ;;
  down) down ;;
  *) usage ;;
esac
