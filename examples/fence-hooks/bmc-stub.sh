#!/usr/bin/env bash
# A STUB for a node-level site fence (a BMC power-off over IPMI/Redfish, or a cloud API that stops
# the VM or detaches its volume). It always FAILS: replace the body with your provider's call.
#
# What a fence hook must guarantee before it exits 0 (understudy then releases the leader key at
# once and the standby is promoted without waiting for the lease):
#   - the old primary can no longer acknowledge any write: its host is powered off (the BMC says
#     "off", not just "command accepted"), or its volume is detached and the detach confirmed, or
#     its instance is in a stopped state — read the state back, do not trust the request;
#   - it cannot come back writable by itself (a watchdog or autoscaler restarting it): keep it
#     off, or make sure it boots behind standby.signal / with the operator's fence set;
#   - it finishes within fenceHook.timeout; past it the controller kills the hook and the lease
#     rule applies (the key is left to expire). Retries: at most 3 runs per give-up.
# Credentials: never in `command` (argv shows in process lists); read them from a mounted Secret
# file, e.g. /var/run/secrets/bmc/password. understudy passes none.
#
# Environment given by understudy: UNDERSTUDY_SITE, UNDERSTUDY_NAMESPACE, UNDERSTUDY_PAIR,
# UNDERSTUDY_EPOCH, UNDERSTUDY_PGHOST, UNDERSTUDY_PGPORT.
set -euo pipefail

# Example shape (Redfish), left commented out on purpose:
#   pw="$(cat /var/run/secrets/bmc/password)"
#   curl -fsS -u "fence:$pw" -X POST -H 'Content-Type: application/json' \
#     -d '{"ResetType":"ForceOff"}' "https://bmc-$UNDERSTUDY_PGHOST/redfish/v1/Systems/1/Actions/ComputerSystem.Reset"
#   for _ in $(seq 1 30); do
#     state="$(curl -fsS -u "fence:$pw" "https://bmc-$UNDERSTUDY_PGHOST/redfish/v1/Systems/1" | jq -r .PowerState)"
#     [ "$state" = "Off" ] && { echo "power off confirmed by the BMC"; exit 0; }
#     sleep 1
#   done
#   echo "BMC did not confirm power off" >&2; exit 1

echo "bmc-stub.sh is a stub: no fence was made for site ${UNDERSTUDY_SITE:-?}; the key is left to its lease" >&2
exit 1
