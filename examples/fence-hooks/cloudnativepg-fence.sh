#!/usr/bin/env bash
# Site fence hook for a CloudNativePG cluster: sets CNPG's fencing annotation
# (cnpg.io/fencedInstances) to fence every instance, then waits until no instance pod is ready
# (CNPG stops PostgreSQL in a fenced instance; the pod stays, the server does not).
# The controller's ServiceAccount needs patch on clusters.postgresql.cnpg.io and list on pods.
#
#   fenceHook:
#     command: ["/hooks/cloudnativepg-fence.sh", "--cluster", "orders"]
#     timeout: 60s
#
# Exit 0 only once every instance reports not ready. The fence stays until someone removes the
# annotation (`kubectl cnpg fencing off orders "*"`), which is what a rejoin must do.
set -euo pipefail

cluster="" ns="${UNDERSTUDY_NAMESPACE:-default}"
while [ $# -gt 0 ]; do
  case "$1" in
    --cluster) cluster="$2"; shift 2 ;;
    --namespace) ns="$2"; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
[ -n "$cluster" ] || { echo "--cluster NAME is required" >&2; exit 2; }

kubectl -n "$ns" annotate --overwrite "clusters.postgresql.cnpg.io/$cluster" 'cnpg.io/fencedInstances=["*"]'
sel="cnpg.io/cluster=$cluster"
while :; do
  ready="$(kubectl -n "$ns" get pods -l "$sel" \
    -o jsonpath='{range .items[*]}{range .status.containerStatuses[?(@.name=="postgres")]}{.ready}{"\n"}{end}{end}' 2>/dev/null | grep -c true || true)"
  [ "$ready" = "0" ] && break
  sleep 1
done
echo "cloudnativepg cluster $ns/$cluster fenced (cnpg.io/fencedInstances=[\"*\"]), no instance ready"
