#!/usr/bin/env bash
# Regenerates e2e/k8s-bins/go.mod for a Kubernetes release: k8s.io/kubernetes requires its staging modules at
# v0.0.0, so every one of them gets a replace to the matching v0.X.Y, read from the release's own go.mod.
# Usage: e2e/scripts/gen-k8s-gomod.sh v1.35.4   (then commit go.mod and go.sum)
set -euo pipefail
ver=${1:?usage: gen-k8s-gomod.sh vMAJOR.MINOR.PATCH}
staging=v0.${ver#v1.}
dir=$(cd "$(dirname "$0")/../k8s-bins" && pwd)
export GOTOOLCHAIN=local GOFLAGS=-mod=mod
modfile=$(go mod download -json "k8s.io/kubernetes@$ver" | sed -n 's/.*"GoMod": "\(.*\)",/\1/p')
cd "$dir"
rm -f go.mod go.sum
go mod init understudy.dev/e2e/k8s-bins >/dev/null 2>&1
# every module the release replaces with its own ./staging/src copy is a staging module
grep -E '=> \./staging/src/' "$modfile" | awk '{print $1}' | sort -u | while read -r m; do
  go mod edit -replace "$m=$m@$staging"
done
go mod edit -require "k8s.io/kubernetes@$ver"
# pin etcd to the version the release itself requires (go get without @version would upgrade)
etcd_ver=$(awk '$1 == "go.etcd.io/etcd/server/v3" {print $2}' "$modfile")
go get -tool "k8s.io/kubernetes/cmd/kube-apiserver@$ver" "go.etcd.io/etcd/server/v3@$etcd_ver" >/dev/null
go mod tidy
echo "gen-k8s-gomod: $(grep -c '=>' go.mod) replaces for k8s.io/kubernetes $ver"
