# understudy — every target installs or builds what it needs through the project's own scripts.
SHELL := /bin/bash
CARGO ?= cargo
CRD := crds/dr.understudy.dev_disasterrecoverypairs.yaml
export CARGO_TERM_COLOR ?= never

.PHONY: all demo test unit e2e lint fmt crds docs check-generated deps k8s-bins helm-bin sandbox-down bench chaos clean

all: test

## demo: two sites, two Kubernetes clusters: the whole east site lost (timeline, RTO, lost commits), then back (writes it accepted: 0; cluster A converging on the witness)
demo: deps k8s-bins
	$(CARGO) build -q -p understudy --bin understudy
	$(CARGO) run -q -p understudy-e2e --bin understudy-demo

## test: lint, generated-file freshness, unit tests and end-to-end tests against real components
test: deps k8s-bins helm-bin lint check-generated
	$(CARGO) build -q -p understudy --bin understudy
	$(CARGO) test --workspace --no-fail-fast

unit:
	$(CARGO) test -p understudy --lib
	$(CARGO) test -p kubectl-understudy

e2e: deps k8s-bins helm-bin
	$(CARGO) build -q -p understudy --bin understudy
	$(CARGO) test -p understudy-e2e

lint: deps helm-bin
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -q -- -D warnings
	"$$(bash e2e/scripts/build-helm.sh)" lint --strict charts/understudy

fmt:
	$(CARGO) fmt --all

## crds: regenerate the CRD YAML from the Rust types (crds/ and the chart's copy)
crds:
	$(CARGO) run -q -p understudy -- crd > $(CRD).tmp && mv $(CRD).tmp $(CRD)
	mkdir -p charts/understudy/crds && cp $(CRD) charts/understudy/crds/

## docs: regenerate docs/crd-reference.md from the Rust types
docs:
	mkdir -p docs && $(CARGO) run -q -p understudy -- crd --reference > docs/crd-reference.md

check-generated: crds docs
	@git diff --exit-code -- crds/ charts/understudy/crds/ docs/crd-reference.md || { echo "generated files are stale: run 'make crds docs' and commit" >&2; exit 1; }

## deps: Debian packages (PostgreSQL 15, PgBouncer, BIND9, etcd, protoc), only when missing
deps:
	@bash e2e/scripts/install-deps.sh

## k8s-bins: kube-apiserver, etcd and kubectl built from Go modules, cached in ~/.cache/understudy
k8s-bins:
	@bash e2e/scripts/build-k8s.sh >/dev/null

## helm-bin: Helm built from Go modules, cached in ~/.cache/understudy
helm-bin:
	@bash e2e/scripts/build-helm.sh >/dev/null

## bench: failover RTO/RPO (one controller, and one per site with the leader key) and planned switchovers side by side with Patroni, and the controller's footprint (BENCH_ARGS='--runs 2 --pairs 50', '--only switchover', '--only two-site --lease-ttls 10,4'; BENCH_ARGS=--help lists every flag). Two Kubernetes clusters, the whole site lost and back, run on their own: BENCH_ARGS='two-cluster --runs 10 --lease-ttls 4,10'; what replication: Sync costs: BENCH_ARGS='sync-cost --runs 5 --secs 15'; many pairs failing over at once under one controller: BENCH_ARGS='mass-failover --pairs 20 --runs 3'; one failover beside 999 probed pairs: BENCH_ARGS='loaded-failover --runs 3'
bench: deps k8s-bins
	$(CARGO) build -q -p understudy --bin understudy
	$(CARGO) build -q --release -p understudy --bin understudy
	$(CARGO) run --release -p understudy-e2e --bin understudy-bench -- $(BENCH_ARGS)

## chaos: repeat N races of two controllers, N partitions of the primary site and N black-holed primaries (make chaos N=50), and max(N, 50) primary kills under replication: Sync (0 acknowledged commits lost)
N ?= 20
chaos: deps k8s-bins
	$(CARGO) build -q -p understudy --bin understudy
	CHAOS_ROUNDS=$(N) $(CARGO) test -p understudy-e2e --test fencing two_controllers_racing -- --nocapture
	CHAOS_ROUNDS=$(N) $(CARGO) test -p understudy-e2e --test partition a_primary_site_cut_off -- --nocapture
	CHAOS_ROUNDS=$(N) $(CARGO) test -p understudy-e2e --test failover a_black_holed_primary -- --nocapture
	CHAOS_ROUNDS=$$(( $(N) < 50 ? 50 : $(N) )) $(CARGO) test -p understudy-e2e --test sync sync_mode_loses_no_acknowledged_commit -- --nocapture

## sandbox-down: kill anything a crashed run left under /tmp/understudy-sbx
sandbox-down:
	-@pkill -9 -f /tmp/understudy-sbx/ ; rm -rf /tmp/understudy-sbx

clean: sandbox-down
	$(CARGO) clean
