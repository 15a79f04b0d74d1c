#!/usr/bin/env bash
# Installs what stream-conductor needs and builds it, on Debian or Ubuntu with Node.js >= 20 and
# npm: nginx with its stream module (Debian packages), pnpm, the workspace's dependencies, the
# compiled packages. Safe to run again: each step is skipped when it is already done.
# Run as root, or as a user with sudo (only the nginx install needs it).
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'bootstrap: %s\n' "$*" >&2; }
as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else say "needs root for: $*"; exit 1
  fi
}

if ! node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 20 || (a === 20 && b >= 18) ? 0 : 1)'; then
  say "Node.js 20.18 or later is needed; this is $(node --version)"
  exit 1
fi

# nginx with the stream module. Debian builds the module as a separate package.
NGINX="${NGINX_BIN:-/usr/sbin/nginx}"
has_stream() {
  [ -x "$NGINX" ] || return 1
  local build; build=$("$NGINX" -V 2>&1)
  case "$build" in
    *--with-stream=dynamic*) [ -e /usr/lib/nginx/modules/ngx_stream_module.so ] ;;
    *--with-stream*) return 0 ;;
    *) return 1 ;;
  esac
}
if ! has_stream; then
  say "installing nginx and its stream module (apt-get)"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx-light libnginx-mod-stream >/dev/null
  has_stream || { say "nginx at $NGINX still has no stream module"; exit 1; }
fi

# pnpm: from npm (corepack's download is not used).
if command -v pnpm >/dev/null 2>&1; then
  PNPM=(pnpm)
elif [ "$(id -u)" -eq 0 ] && npm install -g --silent pnpm@10.34.9 >/dev/null 2>&1; then
  say "installed pnpm $(pnpm --version)"
  PNPM=(pnpm)
else
  PNPM=(npx --yes pnpm@10.34.9)
fi

# Dependencies exactly as locked; quick when node_modules is already current.
"${PNPM[@]}" install --frozen-lockfile --prefer-offline --reporter=silent
"${PNPM[@]}" run --silent build

