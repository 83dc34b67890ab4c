#!/usr/bin/env bash
# Installs what `make bench` needs on top of install-deps.sh, from Debian, only when something is missing:
# Patroni (the comparison system) with its etcd DCS support, and psycopg for it. Idempotent: a second run
# on a provisioned machine installs nothing and prints one summary line.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bash "$here/install-deps.sh" >/dev/null

need=()
have_cmd() { command -v "$1" >/dev/null 2>&1; }
have_py() { /usr/bin/python3 -c "import $1" >/dev/null 2>&1; }
have_cmd patroni || need+=(patroni)
have_cmd patronictl || [[ " ${need[*]:-} " == *" patroni "* ]] || need+=(patroni)
# Patroni's etcd (v2/v3 gRPC-gateway) DCS module and its PostgreSQL driver
have_py etcd || need+=(python3-etcd)
have_py psycopg2 || need+=(python3-psycopg2)
have_cmd etcd || need+=(etcd-server)

if [ ${#need[@]} -gt 0 ]; then
  # Debian's patroni package may try to start a service on install; the bench runs its own instances.
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  echo "install-bench-deps: installing ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
echo "install-bench-deps: ok (patroni $(patroni --version 2>/dev/null | awk '{print $2}'), etcd $(etcd --version | head -1 | awk '{print $3}'))"
