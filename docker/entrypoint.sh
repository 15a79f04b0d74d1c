#!/usr/bin/env bash
# The container's entrypoint: runs nginx (external mode: the daemon does not own it) and the
# daemon side by side. When either of them ends, the other is stopped and the script exits with
# the status of the one that ended first, so the container's restart policy brings both back.
# SIGTERM/SIGINT stop both in order. Every path comes from the environment, so the same script
# runs (and is tested) on a host.
set -euo pipefail

: "${NGINX_BIN:=/usr/sbin/nginx}"
: "${STREAM_CONFIG_PATH:=/etc/nginx/stream.d}"
: "${CONDUCTOR_HOME:=/var/lib/stream-conductor}"
: "${PORT_RANGE:=9000-9009}"
: "${CONDUCTOR_RUN_DIR:=/run/stream-conductor}"
: "${CONDUCTOR_NGINX_CONF:=$CONDUCTOR_RUN_DIR/nginx.conf}"
: "${CONDUCTOR_NGINX_PID_FILE:=$CONDUCTOR_RUN_DIR/nginx.pid}"
: "${CONDUCTOR_NGINX_ERROR_LOG:=$CONDUCTOR_RUN_DIR/error.log}"
: "${CONDUCTOR_DAEMON:=$(cd "$(dirname "$0")/.." && pwd)/packages/daemon/bin/conductor-daemon.js}"
export NGINX_BIN STREAM_CONFIG_PATH CONDUCTOR_HOME PORT_RANGE CONDUCTOR_NGINX_CONF CONDUCTOR_NGINX_PID_FILE CONDUCTOR_NGINX_ERROR_LOG
export CONDUCTOR_NGINX_MODE=external

say() { printf '{"time":"%s","level":"%s","msg":"%s","component":"entrypoint"}\n' "$(date -u +%Y-%m-%dT%H:%M:%S.000Z)" "$1" "$2" >&2; }

if [[ ! "$PORT_RANGE" =~ ^([0-9]+)-([0-9]+)$ ]]; then
  say error "PORT_RANGE must look like 9000-9009, got '$PORT_RANGE'"
  exit 1
fi
range_size=$(( BASH_REMATCH[2] - BASH_REMATCH[1] + 1 ))
# Every stream is a listening socket in every worker; sessions take two connections each.
worker_connections=$(( range_size + 4096 + 16 ))

load_module=""
# nginx has no use for the API token: it never sees it.
if env -u CONDUCTOR_TOKEN "$NGINX_BIN" -V 2>&1 | grep -q -- '--with-stream=dynamic'; then
  load_module="load_module /usr/lib/nginx/modules/ngx_stream_module.so;"
fi

mkdir -p "$STREAM_CONFIG_PATH" "$CONDUCTOR_HOME" "$(dirname "$CONDUCTOR_NGINX_CONF")" "$(dirname "$CONDUCTOR_NGINX_PID_FILE")" "$(dirname "$CONDUCTOR_NGINX_ERROR_LOG")"
cat > "$CONDUCTOR_NGINX_CONF" <<CONF
# Written by the stream-conductor entrypoint at every container start.
daemon off;
worker_processes auto;
pid $CONDUCTOR_NGINX_PID_FILE;
error_log $CONDUCTOR_NGINX_ERROR_LOG warn;
worker_rlimit_nofile $(( worker_connections + 1024 ));
$load_module

events {
    worker_connections $worker_connections;
}

stream {
    include $STREAM_CONFIG_PATH/*.conf;
}
CONF

# A per-stream file whose backend name stopped resolving would keep nginx from starting at all.
# nginx therefore starts without them; the daemon then puts every stream back through its
# verified pipeline and sets aside (and reports) the ones nginx cannot take.
prefix="${STREAM_PREFIX:-_conductor_}"
held="$CONDUCTOR_RUN_DIR/held"
mkdir -p "$held"
find "$STREAM_CONFIG_PATH" -maxdepth 1 -name "$prefix*.conf" -exec mv -t "$held" {} +

env -u CONDUCTOR_TOKEN "$NGINX_BIN" -c "$CONDUCTOR_NGINX_CONF" -e "$CONDUCTOR_NGINX_ERROR_LOG" &
nginx_pid=$!
for _ in $(seq 1 100); do
  [ -s "$CONDUCTOR_NGINX_PID_FILE" ] && break
  kill -0 "$nginx_pid" 2>/dev/null || break
  sleep 0.05
done
if ! kill -0 "$nginx_pid" 2>/dev/null; then
  say error "nginx did not start; see $CONDUCTOR_NGINX_ERROR_LOG"
  wait "$nginx_pid" || true
  find "$held" -maxdepth 1 -name "$prefix*.conf" -exec mv -t "$STREAM_CONFIG_PATH" {} +
  exit 1
fi
find "$held" -maxdepth 1 -name "$prefix*.conf" -exec mv -t "$STREAM_CONFIG_PATH" {} +
say info "nginx started (pid $nginx_pid)"

"$CONDUCTOR_DAEMON" "$@" &
daemon_pid=$!

stop() {
  trap - TERM INT
  say info "stopping"
  kill -TERM "$daemon_pid" 2>/dev/null || true
  wait "$daemon_pid" 2>/dev/null || true
  kill -TERM "$nginx_pid" 2>/dev/null || true
  wait "$nginx_pid" 2>/dev/null || true
  exit 0
}
trap stop TERM INT

set +e
wait -n "$nginx_pid" "$daemon_pid"
status=$?
set -e
if kill -0 "$nginx_pid" 2>/dev/null; then
  say error "the daemon exited ($status); stopping nginx"
else
  say error "nginx exited ($status); stopping the daemon"
fi
kill -TERM "$daemon_pid" "$nginx_pid" 2>/dev/null || true
wait 2>/dev/null || true
exit $(( status == 0 ? 1 : status ))
