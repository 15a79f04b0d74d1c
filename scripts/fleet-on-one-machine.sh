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
# The daemons' other settings are their defaults: CONDUCTOR_* and the other settings of this
# shell are not passed on to them.
set -euo pipefail

usage() {
  echo "usage: $0 start|stop DIR" >&2
  exit 2
}
what=${1:-}
[[ -n "$what" && -n "${2:-}" ]] || usage
[[ "$what" == start || "$what" == stop ]] || usage
# DIR as the caller meant it, before this script moves to the repository.
[[ "$what" == start ]] && mkdir -p "$2"
[[ -d "$2" ]] || { echo "$2 is not a folder" >&2; exit 1; }
dir=$(cd "$2" && pwd)
ROOT=$(cd "$(dirname "$0")/.." && pwd)
base=${FLEET_BASE:-12000}
range=${PORT_RANGE:-9000-9009}

# Whether the pid in a pid file is still the process this script started (not a reused pid).
ours() {
  local pid=$1
  kill -0 "$pid" 2> /dev/null && tr '\0' ' ' < "/proc/$pid/cmdline" 2> /dev/null | grep -Eq "etcd --name|conductor-daemon"
}

stop() {
  local failed=0
  for pidfile in "$dir"/edge-*.pid "$dir"/etcd-*.pid; do
    [[ -e "$pidfile" ]] || continue
    pid=$(cat "$pidfile")
    if ours "$pid"; then
      kill "$pid" 2> /dev/null || true
      # The daemons stop their nginx before they exit; a process still there after 15 s is killed.
      for _ in $(seq 1 150); do ours "$pid" || break; sleep 0.1; done
      if ours "$pid"; then
        echo "$(basename "$pidfile" .pid) (pid $pid) did not stop; killing it" >&2
        kill -KILL "$pid" 2> /dev/null || true
        sleep 0.5
        ours "$pid" && failed=1 && continue
      fi
    fi
    rm -f "$pidfile"
  done
  return $failed
}

if [[ "$what" == stop ]]; then
  stop
  exit $?
fi

for pidfile in "$dir"/*.pid; do
  [[ -e "$pidfile" ]] || continue
  if ours "$(cat "$pidfile")"; then
    echo "a fleet already runs in $dir: stop it first ($0 stop $dir)" >&2
    exit 1
  fi
  rm -f "$pidfile"
done
command -v etcd > /dev/null || { echo "etcd is missing: apt-get install -y etcd-server" >&2; exit 1; }
trap 'echo "start failed; stopping what started" >&2; stop || true' ERR
trap 'stop || true; exit 130' INT TERM

# Whether etcd member $1 answers its health check as healthy.
healthy() {
  local answer
  answer=$( (exec 3<> "/dev/tcp/127.0.0.1/$((base + $1))" && printf 'GET /health HTTP/1.0\r\n\r\n' >&3 && cat <&3) 2> /dev/null) || return 1
  [[ "$answer" == *'"health":"true"'* ]]
}

# 1. Three etcd members on loopback: one cluster, one data folder each.
cluster=""
for i in 1 2 3; do cluster+="${cluster:+,}etcd-$i=http://127.0.0.1:$((base + 10 + i))"; done
for i in 1 2 3; do
  env -i PATH="$PATH" etcd --name "etcd-$i" --data-dir "$dir/etcd-$i" \
    --listen-client-urls "http://127.0.0.1:$((base + i))" --advertise-client-urls "http://127.0.0.1:$((base + i))" \
    --listen-peer-urls "http://127.0.0.1:$((base + 10 + i))" \
    --initial-advertise-peer-urls "http://127.0.0.1:$((base + 10 + i))" \
    --initial-cluster "$cluster" --initial-cluster-state new --initial-cluster-token "fleet-$base" \
    --log-level error >> "$dir/etcd-$i.log" 2>&1 &
  echo $! > "$dir/etcd-$i.pid"
done
for i in 1 2 3; do
  for _ in $(seq 1 150); do
    healthy "$i" && break
    ours "$(cat "$dir/etcd-$i.pid")" || { tail -5 "$dir/etcd-$i.log" >&2; false; }
    sleep 0.2
  done
  healthy "$i" || { echo "etcd-$i is not healthy after 30 s" >&2; false; }
done
endpoints="127.0.0.1:$((base + 1)),127.0.0.1:$((base + 2)),127.0.0.1:$((base + 3))"

# 2. One token for the whole fleet, in a file only its owner reads.
if [[ ! -s "$dir/tokens" ]]; then
  (umask 077 && head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$dir/tokens")
fi

# 3. Three daemons: a home, an API port, a listen address and a host id each; the same store,
#    range and token; nothing else from this shell's environment.
for i in 1 2 3; do
  : > "$dir/edge-$i.log"
  env -i PATH="$PATH" HOME="${HOME:-/root}" \
    CONDUCTOR_STORE="etcd://$endpoints" CONDUCTOR_HOST_ID="edge-$i" CONDUCTOR_HOME="$dir/edge-$i" \
    CONDUCTOR_LISTEN_ADDRESS="127.0.0.$((i + 1))" BIND_PORT=$((base + 20 + i)) PORT_RANGE="$range" \
    CONDUCTOR_TOKEN_FILE="$dir/tokens" CONDUCTOR_LOG_FORMAT=json \
    node "$ROOT/packages/daemon/bin/conductor-daemon.js" >> "$dir/edge-$i.log" 2>&1 &
  echo $! > "$dir/edge-$i.pid"
done
for i in 1 2 3; do
  for _ in $(seq 1 150); do
    grep -q '"msg":"ready"' "$dir/edge-$i.log" && break
    ours "$(cat "$dir/edge-$i.pid")" || { tail -5 "$dir/edge-$i.log" >&2; false; }
    sleep 0.2
  done
  grep -q '"msg":"ready"' "$dir/edge-$i.log" || { echo "edge-$i is not ready after 30 s" >&2; false; }
done
trap - ERR INT TERM

cat << EOF
fleet up: etcd on $endpoints; edge-1..3 APIs on 127.0.0.1:$((base + 21))-$((base + 23)), streams on 127.0.0.2-4
  export CONDUCTOR_URL=http://127.0.0.1:$((base + 21)) CONDUCTOR_TOKEN=\$(cat $dir/tokens)
  conductor create 9000 db.internal:5432     # then: conductor ls (HOSTS 3/3)
stop it with: bash scripts/fleet-on-one-machine.sh stop $dir
EOF
