#!/usr/bin/env bash
# The sandbox's site fence hook (spec.sites[*].fenceHook), used by e2e/tests/site_fence.rs: the
# database runs on this host, so fencing it means
#   1. no process of that server is left: the postmaster and every backend (a backend orphaned by
#      a SIGKILLed postmaster can still finish a commit), found by their working directory, which
#      PostgreSQL sets to its data directory;
#   2. it cannot come back writable: standby.signal in the data directory, so whatever starts it
#      again gets a standby that accepts no write until a controller holding the epoch promotes it.
# Exit 0 only when both hold: understudy releases the leader key at once on exit 0.
#
#   sandbox-local.sh --data /path/to/pgdata
set -euo pipefail

data=""
while [ $# -gt 0 ]; do
  case "$1" in
    --data) data="$2"; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
[ -n "$data" ] && [ -d "$data" ] || { echo "--data DIR: no such data directory: ${data:-<unset>}" >&2; exit 2; }
data="$(cd "$data" && pwd -P)"

server_pids() {
  local p
  for p in /proc/[0-9]*; do
    [ "$(readlink "$p/cwd" 2>/dev/null || true)" = "$data" ] && echo "${p#/proc/}"
  done
  return 0
}

for _ in $(seq 1 50); do
  pids="$(server_pids)"
  [ -z "$pids" ] && break
  # shellcheck disable=SC2086
  kill -9 $pids 2>/dev/null || true
  sleep 0.1
done
pids="$(server_pids)"
if [ -n "$pids" ]; then
  echo "processes of $data still alive after SIGKILL: $pids" >&2
  exit 1
fi

# The boot gate, owned like the data directory (the server removes it when it is promoted).
touch "$data/standby.signal"
chown --reference="$data" "$data/standby.signal" 2>/dev/null || true
[ -f "$data/standby.signal" ] || { echo "could not write $data/standby.signal" >&2; exit 1; }

echo "site ${UNDERSTUDY_SITE:-?} (${UNDERSTUDY_NAMESPACE:-?}/${UNDERSTUDY_PAIR:-?}, epoch ${UNDERSTUDY_EPOCH:-?}): no server process left in $data, standby.signal armed"
