#!/usr/bin/env bash
# A fleet on one machine, to try fleet mode: three etcd members and three daemons (edge-1..3),
# each daemon with its own home, nginx, API port and loopback listen address, all on one set of
# streams. Nothing outside DIR is touched; everything listens on loopback only.
#
#   bash scripts/fleet-on-one-machine.sh start DIR    # starts them; prints how to point the CLI at one
#   bash scripts/fleet-on-one-machine.sh stop DIR     # stops them (the daemons stop their nginx)
#
# Ports (FLEET_BASE, 12000 by default): etcd clients BASE+1..3, etcd peers BASE+11..13, the daemons'
# APIs BASE+21..23; streams PORT_RANGE (9000-9009 by default) on 127.0.0.2, 127.0.0.3, 127.0.0.4.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

what=${1:-}
dir=${2:-}
if [[ -z "$what" || -z "$dir" ]]; then
  echo "usage: $0 start|stop DIR" >&2
  exit 2
fi
base=${FLEET_BASE:-12000}
range=${PORT_RANGE:-9000-9009}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

stop() {
  for pidfile in "$dir"/*.pid; do
    [[ -e "$pidfile" ]] || continue
    pid=$(cat "$pidfile")
    kill "$pid" 2>/dev/null || true
    # The daemons stop their nginx before they exit.
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    rm -f "$pidfile"
  done
}

if [[ "$what" == stop ]]; then
  stop
  exit 0
fi
if [[ "$what" != start ]]; then
  echo "usage: $0 start|stop DIR" >&2
  exit 2
fi
command -v etcd > /dev/null || { echo "etcd is missing: apt-get install -y etcd-server" >&2; exit 1; }
trap 'echo "start failed; stopping what started" >&2; stop' ERR

# 1. Three etcd members on loopback: one cluster, one data folder each.
cluster=""
for i in 1 2 3; do cluster+="${cluster:+,}etcd-$i=http://127.0.0.1:$((base + 10 + i))"; done
for i in 1 2 3; do
  etcd --name "etcd-$i" --data-dir "$dir/etcd-$i" \
    --listen-client-urls "http://127.0.0.1:$((base + i))" --advertise-client-urls "http://127.0.0.1:$((base + i))" \
    --listen-peer-urls "http://127.0.0.1:$((base + 10 + i))" \
    --initial-advertise-peer-urls "http://127.0.0.1:$((base + 10 + i))" \
    --initial-cluster "$cluster" --initial-cluster-state new --initial-cluster-token "fleet-$base" \
    --log-level error > "$dir/etcd-$i.log" 2>&1 &
  echo $! > "$dir/etcd-$i.pid"
done
endpoints="127.0.0.1:$((base + 1)),127.0.0.1:$((base + 2)),127.0.0.1:$((base + 3))"
for _ in $(seq 1 100); do
  (: < "/dev/tcp/127.0.0.1/$((base + 1))") 2> /dev/null && break
  sleep 0.2
done

# 2. One token for the whole fleet, in a file only its owner reads.
if [[ ! -s "$dir/tokens" ]]; then
  (umask 077 && head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$dir/tokens")
fi

# 3. Three daemons: a home, an API port, a listen address and a host id each; the same store,
#    range and token.
for i in 1 2 3; do
  CONDUCTOR_STORE="etcd://$endpoints" CONDUCTOR_HOST_ID="edge-$i" CONDUCTOR_HOME="$dir/edge-$i" \
    CONDUCTOR_LISTEN_ADDRESS="127.0.0.$((i + 1))" BIND_PORT=$((base + 20 + i)) PORT_RANGE="$range" \
    CONDUCTOR_TOKEN_FILE="$dir/tokens" CONDUCTOR_LOG_FORMAT=json \
    node "$ROOT/packages/daemon/bin/conductor-daemon.js" > "$dir/edge-$i.log" 2>&1 &
  echo $! > "$dir/edge-$i.pid"
done
for i in 1 2 3; do
  for _ in $(seq 1 150); do
    grep -q '"msg":"ready"' "$dir/edge-$i.log" 2>/dev/null && break
    kill -0 "$(cat "$dir/edge-$i.pid")" 2>/dev/null || { cat "$dir/edge-$i.log" >&2; false; }
    sleep 0.2
  done
  grep -q '"msg":"ready"' "$dir/edge-$i.log"
done
trap - ERR

cat << EOF
fleet up: etcd on $endpoints; edge-1..3 APIs on 127.0.0.1:$((base + 21))-$((base + 23)), streams on 127.0.0.2-4
  export CONDUCTOR_URL=http://127.0.0.1:$((base + 21)) CONDUCTOR_TOKEN=\$(cat $dir/tokens)
  conductor create 9000 db.internal:5432     # then: conductor ls (HOSTS 3/3)
stop it with: bash scripts/fleet-on-one-machine.sh stop $dir
EOF
