#!/usr/bin/env bash
# Builds kube-apiserver, etcd and kubectl from the pinned Go modules in e2e/k8s-bins, with the version ldflags
# so the server reports its real version. Output is cached in $UNDERSTUDY_CACHE/k8s-<version>/ (default
# ~/.cache/understudy): a second run with the binaries present does nothing.
set -euo pipefail
here=$(cd "$(dirname "$0")/../k8s-bins" && pwd)
ver=$(awk '$1 == "require" && $2 == "k8s.io/kubernetes" {print $3} $1 == "k8s.io/kubernetes" && $2 ~ /^v1/ {print $2}' "$here/go.mod" | head -1)
[ -n "$ver" ] || { echo "build-k8s: cannot read the k8s.io/kubernetes version from $here/go.mod" >&2; exit 1; }
out=${UNDERSTUDY_CACHE:-$HOME/.cache/understudy}/k8s-$ver
mkdir -p "$out"
minor=${ver#v1.}; minor=${minor%%.*}
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$ver -X k8s.io/component-base/version.gitMajor=1 \
 -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean \
 -X k8s.io/client-go/pkg/version.gitVersion=$ver -X k8s.io/client-go/pkg/version.gitMajor=1 \
 -X k8s.io/client-go/pkg/version.gitMinor=$minor"
build() { # name package
  if [ -x "$out/$1" ]; then return; fi
  echo "build-k8s: building $1 ($2) for $ver; a cold build takes several minutes" >&2
  local t0=$SECONDS
  (cd "$here" && go build -trimpath -tags=selinux,notest,grpcnotrace -ldflags "$ldflags" -o "$out/$1.tmp" "$2")
  mv "$out/$1.tmp" "$out/$1"
  echo "build-k8s: $1 built in $((SECONDS - t0)) s" >&2
}
build kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver
build etcd go.etcd.io/etcd/server/v3
build kubectl k8s.io/kubernetes/cmd/kubectl
echo "$out"
