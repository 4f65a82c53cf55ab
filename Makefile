# pflex: software-defined block storage on the PowerFlex architecture.
GO        ?= go
BIN       := bin/pflex
PKGS      := ./...

.PHONY: all build test test-short race lint vet fmt-check bench bench-etcd demo clean jepsen image fuzz

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN) ./cmd/pflex

# make test: gofmt + vet, then every package under the race detector, including the in-process
# and process-level cluster tests. One package at a time (-p 1): the process-level suites
# (systest, jepsen) start whole clusters on loopback ports and must not race each other for
# ports or for the two cores.
test: lint
	$(GO) test -race -count=1 -p 1 -timeout 14m $(PKGS)

test-short:
	$(GO) test -short -count=1 $(PKGS)

lint: fmt-check vet

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet $(PKGS)

# make bench: MDM commit throughput and latency (1/16/64 clients) and leader-kill failover, on
# three real processes with fsync on; FSM apply cost; SDS/SDC heartbeat failover. Figures: docs/BENCHMARKS.md.
bench:
	$(GO) test -run '^$$' -bench 'BenchmarkApply' -benchmem ./fsm/
	$(GO) test -run '^$$' -bench 'BenchmarkCommit' -benchtime 20000x -timeout 20m ./mdm/
	$(GO) test -run '^$$' -bench 'BenchmarkPlannerRound' -benchtime 10x ./mdm/
	$(MAKE) bench-etcd
	$(GO) test -run '^$$' -bench 'BenchmarkLeaderKillFailover' -benchtime 1x -timeout 20m -v ./mdm/ | grep -E 'rep|Benchmark|ok'
	$(GO) test -run '^$$' -bench 'BenchmarkLeaderKillHeartbeatFailover' -benchtime 1x -timeout 20m -v ./systest/ | grep -E 'rep|Benchmark|ok'
	$(GO) test -run '^$$' -bench 'BenchmarkNBDAgainstQemuNBD' -benchtime 1x -timeout 20m -v ./systest/ | grep -E 'bench_io|ok'
	$(GO) test -run '^$$' -bench 'BenchmarkSDSKillNBDStall' -benchtime 1x -timeout 20m -v ./systest/ | grep -E 'run [0-9]+:|bench_sds_kill|ok'
	$(GO) test -run '^$$' -bench 'BenchmarkRebuildThroughput' -benchtime 1x -timeout 20m -v ./systest/ | grep -E 'bench_rebuild|ok'

# make fuzz: every fuzz target for FUZZTIME each (make test runs only their seed corpora): the
# data protocol's frame decoders, a live two-SDS cluster fed arbitrary requests (FuzzDataServer),
# token parsing and the NBD server's input. Findings land in the package's testdata/fuzz/.
FUZZTIME ?= 30s
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzReadRequest$$' -fuzztime $(FUZZTIME) ./internal/wire/
	$(GO) test -run '^$$' -fuzz '^FuzzReplyHeader$$' -fuzztime $(FUZZTIME) ./internal/wire/
	$(GO) test -run '^$$' -fuzz '^FuzzDataServer$$' -fuzztime $(FUZZTIME) ./sds/
	$(GO) test -run '^$$' -fuzz '^FuzzReplicaOrder$$' -fuzztime $(FUZZTIME) ./sds/
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) ./internal/token/
	$(GO) test -run '^$$' -fuzz '^FuzzServerInput$$' -fuzztime $(FUZZTIME) ./sdc/nbd/

# make bench-etcd: a three-node etcd (3.6, from the Go module proxy) on this machine under the same
# closed-loop load as BenchmarkCommit, for issue 2's "beat etcd" target. Its own module (bench/etcd)
# so that pflex does not depend on etcd.
bench-etcd:
	cd bench/etcd && $(GO) run . -clients 1,16,64 -writes 20000

# make jepsen: the chaos matrix, every workload x every nemesis, RUNS runs of TIME each: process
# faults on local processes, partitions (partition-leader, -majority, -bridge) on network
# namespaces and docker containers when run as root (block: netns only). Default 3 x 45s, 26
# combinations: about 90 minutes. Choose with e.g. make jepsen RUNS=10 TIME=30s
# PARTITION_BACKENDS=netns WORKLOADS=labels. Summary in jepsen-report/matrix-*/summary.md; see docs/CHAOS.md.
RUNS ?= 3
TIME ?= 45s
jepsen: build
	RUNS=$(RUNS) TIME=$(TIME) ./jepsen/scripts/matrix.sh

# make image: the pflex:local image, FROM scratch with the static binary and configs/compose
# (nothing is pulled). Run it with configs/compose/docker-compose.yml; see README "Docker compose".
IMAGE ?= pflex:local
image: build
	tar -c bin/pflex configs/compose | docker build -f configs/compose/Dockerfile -t $(IMAGE) -

# make demo: a three-MDM quorum on loopback (configs/local), Ctrl-C stops it.
demo: build
	./scripts/demo.sh

clean:
	rm -rf bin data .pflex-demo
