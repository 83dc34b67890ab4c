#!/usr/bin/env bash
# Builds Helm from its Go module with this machine's Go (no binary downloads: only the Go module proxy).
# Output is cached in $UNDERSTUDY_CACHE/helm-<version>/helm (default ~/.cache/understudy): a second run
# with the binary present does nothing. The last line printed is the path of the binary.
set -euo pipefail
ver=${UNDERSTUDY_HELM_VERSION:-v4.2.4}
out=${UNDERSTUDY_CACHE:-$HOME/.cache/understudy}/helm-$ver
bin=$out/helm
if [ ! -x "$bin" ]; then
  export GOTOOLCHAIN=local CGO_ENABLED=0
  if ! go list -m -versions helm.sh/helm/v4 2>/dev/null | tr ' ' '\n' | grep -qx "$ver"; then
    echo "build-helm: helm.sh/helm/v4 $ver is not on the module proxy ($(go env GOPROXY));" \
      "pick one of: $(go list -m -versions helm.sh/helm/v4 2>&1)" >&2
    exit 1
  fi
  echo "build-helm: building helm $ver from Go modules; a cold build takes a few minutes" >&2
  t0=$SECONDS
  mkdir -p "$out"
  tmp=$(mktemp -d "$out/.gobin.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  # The version ldflag makes `helm version` report the real release (the module default is "v4.2").
  GOBIN=$tmp go install -trimpath \
    -ldflags "-s -w -X helm.sh/helm/v4/internal/version.version=$ver -X helm.sh/helm/v4/internal/version.gitTreeState=clean" \
    "helm.sh/helm/v4/cmd/helm@$ver"
  mv "$tmp/helm" "$bin"
  echo "build-helm: helm built in $((SECONDS - t0)) s" >&2
fi
echo "$bin"
