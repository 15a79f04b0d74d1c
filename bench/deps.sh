#!/usr/bin/env bash
# What the benchmarks use beyond the daemon's own needs: iperf3 and HAProxy (for the data-plane
# comparison), Debian packages, installed only when missing.
set -euo pipefail
missing=()
command -v iperf3 >/dev/null 2>&1 || missing+=(iperf3)
command -v haproxy >/dev/null 2>&1 || missing+=(haproxy)
[ ${#missing[@]} -eq 0 ] && exit 0
run() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
run env DEBIAN_FRONTEND=noninteractive apt-get update -qq
run env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Debian starts the packaged HAProxy service; the benchmark runs its own.
if command -v systemctl >/dev/null 2>&1; then run systemctl disable --now haproxy >/dev/null 2>&1 || true; fi
