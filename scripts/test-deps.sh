#!/usr/bin/env bash
# What the test suite needs beyond what the daemon needs (scripts/bootstrap.sh): zsh, to check the
# zsh completion script; iproute2 (ss), to cut sessions; python3, for a stuck TCP listener; etcd
# (etcd-server), for the fleet tests, which run their own members on loopback ports; systemd, for
# systemd-analyze verify of the service unit (tests/e2e/install; nothing of it is started);
# openssh-server (sshd), for the SNI test's SSH backend, which runs its own sshd on a loopback port:
# the package's own sshd is kept from starting (policy-rc.d while installing, then stopped and
# disabled in case it started anyway), so nothing listens on port 22 afterwards.
# Debian packages, installed only when missing.
set -euo pipefail
missing=()
command -v zsh >/dev/null 2>&1 || missing+=(zsh)
command -v ss >/dev/null 2>&1 || missing+=(iproute2)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
[ -x /usr/sbin/sshd ] || missing+=(openssh-server)
[ ${#missing[@]} -eq 0 ] && exit 0
echo "test-deps: installing ${missing[*]} (apt-get)" >&2
run() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
run env DEBIAN_FRONTEND=noninteractive apt-get update -qq
# No service of these packages may start while installing: a policy-rc.d that says so (Debian's
# invoke-rc.d asks it), unless one is already in place; removed again afterwards.
policy=''
if [ ! -e /usr/sbin/policy-rc.d ]; then
  policy=/usr/sbin/policy-rc.d
  printf '#!/bin/sh\nexit 101\n' | run tee "$policy" >/dev/null
  run chmod 755 "$policy"
fi
status=0
run env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || status=$?
[ -n "$policy" ] && run rm -f "$policy"
[ "$status" -eq 0 ] || exit "$status"
if [[ " ${missing[*]} " == *" openssh-server "* ]]; then
  if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    run systemctl disable --now ssh.service ssh.socket >/dev/null 2>&1 || true
  fi
  # Without systemd: a daemon the package started anyway, found by its pid file only.
  if [ -s /run/sshd.pid ]; then run kill "$(cat /run/sshd.pid)" 2>/dev/null || true; fi
fi
# Debian's package starts a system etcd on 2379 where systemd runs; the tests run their own.
if [[ " ${missing[*]} " == *" etcd-server "* ]] && command -v systemctl >/dev/null 2>&1; then
  run systemctl disable --now etcd >/dev/null 2>&1 || true
fi
