#!/usr/bin/env bash
# What the test suite needs beyond what the daemon needs (scripts/bootstrap.sh): zsh, to check the
# zsh completion script; iproute2 (ss), to cut sessions; python3, for a stuck TCP listener; etcd
# (etcd-server), for the fleet tests, which run their own members on loopback ports; systemd, for
# systemd-analyze verify of the service unit (tests/e2e/install; nothing of it is started).
# Debian packages, installed only when missing.
set -euo pipefail
missing=()
command -v zsh >/dev/null 2>&1 || missing+=(zsh)
command -v ss >/dev/null 2>&1 || missing+=(iproute2)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
[ ${#missing[@]} -eq 0 ] && exit 0
echo "test-deps: installing ${missing[*]} (apt-get)" >&2
run() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
run env DEBIAN_FRONTEND=noninteractive apt-get update -qq
run env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Debian's package starts a system etcd on 2379 where systemd runs; the tests run their own.
if [[ " ${missing[*]} " == *" etcd-server "* ]] && command -v systemctl >/dev/null 2>&1; then
  run systemctl disable --now etcd >/dev/null 2>&1 || true
fi
