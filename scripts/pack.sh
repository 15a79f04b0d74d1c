#!/usr/bin/env bash
# The installable packages: `npm run pack [-- --out DIR] [-- --no-build]` builds the workspace
# (unless --no-build), then writes DIR/stream-conductor-cli-<version>.tgz (the conductor command,
# one bundled file) and DIR/stream-conductor-daemon-<version>.tgz (the daemon, bundled, with its
# systemd unit and settings template), neither with a dependency to fetch. DIR defaults to
# ./packed. Prints the tarballs' paths on stdout. scripts/install.sh installs them.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { echo "usage: scripts/pack.sh [--out DIR] [--no-build]" >&2; exit 2; }
out=packed
build=1
while [ $# -gt 0 ]; do
  case "$1" in
    --out) [ $# -ge 2 ] && [ -n "$2" ] || usage; out=$2; shift 2 ;;
    --out=?*) out=${1#--out=}; shift ;;
    --no-build) build=0; shift ;;
    -h|--help) echo "usage: scripts/pack.sh [--out DIR] [--no-build]"; exit 0 ;;
    *) echo "pack: unknown argument: $1" >&2; usage ;;
  esac
done

if [ "$build" = 1 ]; then
  pnpm run --silent build >&2
fi
exec node packaging/pack.mjs "$out"
