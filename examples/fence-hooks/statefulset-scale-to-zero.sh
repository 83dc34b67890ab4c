#!/usr/bin/env bash
# Site fence hook: scale this site's PostgreSQL StatefulSet to 0 and wait until its pods are gone.
# Run by the site's own controller, in the site's own cluster (its ServiceAccount needs
# get/patch on statefulsets/scale and list on pods in the namespace; the image needs kubectl and
# bash, e.g. mount this script into a controller image built FROM one that has them).
#
#   fenceHook:
#     command: ["/hooks/statefulset-scale-to-zero.sh", "--statefulset", "orders-pg", "--selector", "app=orders-pg"]
#     timeout: 60s
#
# Exit 0 only once no pod of the StatefulSet exists: a pod that is merely Terminating may still
# write. `--grace 0` deletes them at once; whether the volume's node has really stopped the
# process is the kubelet's word (on a partitioned node it is not: prefer a node-level fence there).
set -euo pipefail

sts="" selector="" ns="${UNDERSTUDY_NAMESPACE:-default}" grace=""
while [ $# -gt 0 ]; do
  case "$1" in
    --statefulset) sts="$2"; shift 2 ;;
    --selector) selector="$2"; shift 2 ;;
    --namespace) ns="$2"; shift 2 ;;
    --grace) grace="$2"; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
[ -n "$sts" ] && [ -n "$selector" ] || { echo "--statefulset NAME --selector LABELS are required" >&2; exit 2; }

kubectl -n "$ns" scale statefulset "$sts" --replicas=0
if [ -n "$grace" ]; then
  kubectl -n "$ns" delete pod -l "$selector" --grace-period="$grace" --force --wait=false >/dev/null 2>&1 || true
fi
# The controller's own timeout bounds this wait; it kills the hook (and this loop) past it.
while [ -n "$(kubectl -n "$ns" get pods -l "$selector" -o name 2>/dev/null)" ]; do
  sleep 1
done
echo "statefulset $ns/$sts scaled to 0, no pod left (site ${UNDERSTUDY_SITE:-?}, epoch ${UNDERSTUDY_EPOCH:-?})"
