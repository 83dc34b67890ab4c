#!/usr/bin/env bash
# Installs the Debian packages the sandbox, the tests and the build need, only when something is missing.
# Idempotent: a second run on a provisioned machine does nothing and prints nothing but a summary line.
set -euo pipefail

need=()
have_cmd() { command -v "$1" >/dev/null 2>&1; }
[ -x /usr/lib/postgresql/15/bin/postgres ] || need+=(postgresql-15 postgresql-client-15)
have_cmd pgbouncer || need+=(pgbouncer)
have_cmd named || need+=(bind9)
have_cmd dig || need+=(bind9-dnsutils)
have_cmd nsupdate || need+=(bind9-dnsutils)
have_cmd tsig-keygen || need+=(bind9-utils)
have_cmd etcd || need+=(etcd-server)
have_cmd etcdctl || need+=(etcd-client)
have_cmd protoc || need+=(protobuf-compiler)
# etcd-client compiles etcd's protos, which import the well-known types
[ -f /usr/include/google/protobuf/descriptor.proto ] || need+=(libprotobuf-dev)
have_cmd openssl || need+=(openssl)
have_cmd setpriv || need+=(util-linux)
have_cmd curl || need+=(curl)
# network partitions in the e2e tests (rules by socket owner on loopback)
have_cmd nft || need+=(nftables)

if [ ${#need[@]} -gt 0 ]; then
  # Debian packages start their services on install; the sandbox runs its own instances on its own ports.
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  echo "install-deps: installing ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  rm -f /usr/sbin/policy-rc.d
fi
echo "install-deps: ok (postgres $(/usr/lib/postgresql/15/bin/postgres --version | awk '{print $3}'), pgbouncer $(pgbouncer --version | head -1 | awk '{print $2}'), named $(named -v | awk '{print $2}'), etcd $(etcd --version | head -1 | awk '{print $3}'), protoc $(protoc --version | awk '{print $2}'))"
