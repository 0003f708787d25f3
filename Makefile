# Dataport developer commands. `make run` starts everything on this machine,
# `make test` runs every module's tests against real servers. Both install
# the pinned tools they need into bin/ first.

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
BIN := $(CURDIR)/bin
export PATH := $(BIN):$(PATH)

MODULES := proto shared services/gateway services/room-exporter services/record-exporter services/archiver services/notifier deploy tests/e2e
SERVICES := gateway room-exporter record-exporter archiver notifier
IMAGES := $(SERVICES) seed

NATS_SERVER_VERSION := v2.15.2
MINIO_VERSION := v0.0.0-20260212201848-7aac2a2c5b7c
MAILPIT_VERSION := v1.27.11
BUF_VERSION := v1.75.0
PROTOC_GEN_GO_VERSION := v1.36.12
# Jaeger v2 (cmd/jaeger of the jaeger module) for `make run JAEGER=1`.
JAEGER_VERSION := v1.76.0

# The one version scheme: every binary's main.version, set from git (a
# commit id, with -dirty for uncommitted changes) unless VERSION is given.
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)

# Each tool is built once per pinned version; the stamp file names the
# version so a bump rebuilds it.
TOOL_STAMPS := \
	$(BIN)/.nats-server@$(NATS_SERVER_VERSION) \
	$(BIN)/.minio@$(MINIO_VERSION) \
	$(BIN)/.mailpit@$(MAILPIT_VERSION) \
	$(BIN)/.buf@$(BUF_VERSION) \
	$(BIN)/.protoc-gen-go@$(PROTOC_GEN_GO_VERSION)

.PHONY: help node chromium tools proto lint test test-unit test-typings fuzz-smoke test-e2e test-faults check-modules fmt-check run seed build bench bench-export-rooms bench-export-records bench-split-records bench-split-rooms bench-scale clean images

help:
	@echo "make run     start NATS, MinIO, Mailpit and the five services, seed demo data"
	@echo "             (make run JAEGER=1: also Jaeger, the trace viewer, on 127.0.0.1:16686)"
	@echo "make test    install tools, check formatting and modules, run every test"
	@echo "make proto   regenerate Go code from proto/ with the pinned buf"
	@echo "make lint    buf lint + breaking check, go vet"
	@echo "make bench   run the Go benchmarks (bench-export-rooms, bench-export-records and bench-scale too)"
	@echo "make bench-export-rooms  room exports of 1,000,000 messages beside a minimal pipeline"
	@echo "make bench-export-records  record exports beside a minimal pipeline (BENCH_RECORDS=1000000)"
	@echo "make bench-split-records  one big record export by 1 and by 2 record exporters (SPLIT_RECORDS=10000000)"
	@echo "make bench-split-rooms  one big room export by 1 and by 2 room exporters (SPLIT_ROOM_MESSAGES=10000000)"
	@echo "make bench-scale  load-test the gateway process among 10k, 100k and 1M jobs (SCALE_SIZES=...)"
	@echo "make test-typings  type-check the Rocket.Chat answers against Rocket.Chat's published typings"
	@echo "make fuzz-smoke  run every fuzz target briefly (FUZZTIME=1000x executions each)"
	@echo "make images  build the Docker images dataport/<service>:dev (needs a Docker engine)"

tools: $(TOOL_STAMPS)

$(BIN)/.nats-server@%:
	GOBIN=$(BIN) go install github.com/nats-io/nats-server/v2@$*
	touch $@
$(BIN)/.minio@%:
	@echo "building the MinIO server (takes a few minutes the first time)"
	GOBIN=$(BIN) go install github.com/minio/minio@$*
	touch $@
$(BIN)/.mailpit@%:
	GOBIN=$(BIN) go install github.com/axllent/mailpit@$*
	touch $@
$(BIN)/.buf@%:
	GOBIN=$(BIN) go install github.com/bufbuild/buf/cmd/buf@$*
	touch $@
$(BIN)/.protoc-gen-go@%:
	GOBIN=$(BIN) go install google.golang.org/protobuf/cmd/protoc-gen-go@$*
	touch $@
# Jaeger's go.mod has replace directives, which `go install pkg@version`
# refuses; a throwaway module that requires it as a tool builds it with
# the versions its go.mod pins.
$(BIN)/.jaeger@%:
	@echo "building Jaeger $* (several minutes the first time)"
	d=$$(mktemp -d) && trap 'rm -rf "$$d"' EXIT && cd "$$d" && \
	  GOWORK=off go mod init dataport.dev/jaeger-build >/dev/null 2>&1 && \
	  GOWORK=off go get -tool github.com/jaegertracing/jaeger/cmd/jaeger@$* && \
	  GOWORK=off go build -o $(BIN)/jaeger github.com/jaegertracing/jaeger/cmd/jaeger
	touch $@

proto: $(BIN)/.buf@$(BUF_VERSION) $(BIN)/.protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	cd proto && rm -rf gen && buf lint && buf generate

lint: tools
	cd proto && buf lint
	@if git rev-parse --verify -q main >/dev/null; then cd proto && buf breaking --against '../.git#branch=main,subdir=proto'; fi
	for m in $(MODULES); do (cd $$m && go vet ./...); done

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '/gen/') ); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

# Every module must build, vet and test on its own (Docker builds use
# GOWORK=off), so the tests run per module without the workspace.
check-modules:
	for m in $(MODULES); do echo "== $$m"; (cd $$m && GOWORK=off go build ./... && GOWORK=off go vet ./...); done

# The room exporter's tests that skip themselves under -race.
NORACE_TESTS := TestCSVGzipExportResumesFromCheckpoint|TestExportResumesALongAttachmentList|TestSpeculativeRenderResumes|TestWindowIndexFindsEveryEntry

# The modules' unit tests run TEST_JOBS at a time, the slowest first:
# much of their time is spent waiting on the nats-server and MinIO they
# start, so two cores carry more than one module's binaries. Each
# module's output is printed whole when it ends, then a line per module
# with its time; any failure fails the target once all have ended. The
# timeout leaves room for a package sharing the cores with two others.
TEST_JOBS ?= 3
UNIT_SLOW_FIRST := services/room-exporter services/gateway
UNIT_MODULES := $(UNIT_SLOW_FIRST) $(filter-out tests/e2e $(UNIT_SLOW_FIRST),$(MODULES))
TEST_LOGS := $(CURDIR)/.dataport/test-logs
test-unit: tools node
	@rm -rf $(TEST_LOGS) && mkdir -p $(TEST_LOGS)
	@printf '%s\n' $(UNIT_MODULES) | xargs -P $(TEST_JOBS) -I{} bash -c '\
	  log=$(TEST_LOGS)/$$(echo {} | tr / _); start=$$SECONDS; \
	  rc=0; (cd {} && GOWORK=off go test -race -count=1 -timeout 20m ./...) >$$log.out 2>&1 || rc=$$?; \
	  echo "$$((SECONDS - start)) s, exit $$rc: {}" >$$log.sum; \
	  flock $(TEST_LOGS)/.print bash -c "echo \"== go test {}\"; cat $$log.out; echo \"== go test {}: exit $$rc after $$((SECONDS - start)) s\""; \
	  exit $$rc' || { echo "== test-unit failed:"; grep -v 'exit 0:' $(TEST_LOGS)/*.sum; exit 1; }
	@echo "== test-unit times:"; cat $(TEST_LOGS)/*.sum
	@# Tests too slow under the race detector (gzip of 45k messages) skip
	@# themselves there and run here without it, so they still run.
	echo "== go test services/room-exporter (without -race: $(NORACE_TESTS))"
	cd services/room-exporter && GOWORK=off go test -count=1 -timeout 10m -run '^($(NORACE_TESTS))$$' ./internal/roomexport/

# Every fuzz target (found with go test -list in the packages that have
# one) runs for FUZZTIME on top of its committed corpus in
# testdata/fuzz/<FuzzName>/, with one worker: the machines are shared.
# A failure leaves the crashing input in that directory; commit it with
# the fix. FUZZTIME=100000x make fuzz-smoke digs deeper.
# The budget is a count of executions, not a duration: with a duration,
# Go 1.26's fuzz coordinator can report "context deadline exceeded" at
# the deadline on a loaded machine without any failing input
# (golang/go#75804, fixed in Go 1.27).
FUZZTIME ?= 1000x
# Two targets at a time: each fuzzes with one worker beside its coordinator.
FUZZ_JOBS ?= 2
fuzz-smoke:
	@for m in $(filter-out tests/e2e,$(MODULES)); do \
	  dirs=$$(cd $$m && { grep -rl --include='*_test.go' '^func Fuzz' . || true; } | xargs -r -n1 dirname | sort -u); \
	  [ -n "$$dirs" ] || continue; \
	  (cd $$m && GOWORK=off go test -list '^Fuzz' $$dirs) | \
	    awk -v m=$$m '/^Fuzz/ { t[n++] = $$1 } /^ok/ { for (i = 0; i < n; i++) print m, $$2, t[i]; n = 0 }'; \
	done | xargs -P $(FUZZ_JOBS) -L1 bash -c '\
	  out=$$(cd $$0 && GOWORK=off go test -run "^$$" -fuzz "^$$2\$$" -fuzztime $(FUZZTIME) -parallel 1 $$1 2>&1) && rc=0 || rc=$$?; \
	  printf "== fuzz %s %s\n%s\n" "$$1" "$$2" "$$(grep -v "^fuzz: elapsed" <<<"$$out")"; exit $$rc'

# The Rebilly SDK test runs the SDK under Node.js, and the gateway's unit
# tests type-check the Rocket.Chat answers with tsc (npm fetches the
# pinned typings once into .dataport/); Debian's packages provide both
# where the machine has none.
node:
	@command -v node >/dev/null && command -v npm >/dev/null || \
	  { echo "installing Node.js and npm with apt-get"; apt-get update -qq && apt-get install -y -qq nodejs npm; }

# The console's browser test drives Debian's chromium headless
# (chromedp); it fails, never skips, where chromium is missing.
chromium:
	@command -v chromium >/dev/null || \
	  { echo "installing chromium with apt-get"; apt-get update -qq && apt-get install -y -qq chromium; }

# The long fault tests (-tags longfaults) are left to test-faults.
test-e2e: tools node chromium
	cd tests/e2e && GOWORK=off go test -count=1 -timeout 20m -v ./...

# The Rocket.Chat typings check alone (test-unit runs it too): real
# answers of the dialect against @rocket.chat/rest-typings with tsc.
test-typings: node
	cd services/gateway && GOWORK=off go test -count=1 -run 'TestAnswersFitRocketChatTypings|TestDataDownloadUserDataIsSafe' ./internal/dialect/rocketchat/

# The fault suite alone (kill -9, restarts, outages, cluster node loss,
# leader changes, rolling restarts); test-e2e runs it too but for the long
# tests built with -tags longfaults (a 5-minute MinIO outage), which only
# this target runs. See docs/RELIABILITY.md.
FAULT_TESTS := TestScaleOut|TestCrashesAndOutages|TestAPIGuards|TestClusterLosesANode|TestKilledExporterResumesFromCheckpoint|TestMinIOOutageWithTheDefaults|TestFaultsWithTheDefaults|TestMinIODownFiveMinutesWithTheDefaults
test-faults: tools
	cd tests/e2e && GOWORK=off go test -tags longfaults -count=1 -timeout 25m -v -run '$(FAULT_TESTS)' ./...

test: tools fmt-check check-modules test-unit fuzz-smoke test-e2e

build:
	mkdir -p $(BIN)
	for s in $(SERVICES); do (cd services/$$s && go build -ldflags "$(LDFLAGS)" -o $(BIN)/dataport-$$s .); done
	cd shared && go build -ldflags "$(LDFLAGS)" -o $(BIN)/dataport-seed ./cmd/dataport-seed
	cd shared && go build -ldflags "$(LDFLAGS)" -o $(BIN)/dataport ./cmd/dataport

seed: build
	$(BIN)/dataport-seed

# JAEGER=1 also builds and starts Jaeger and sends the traces there.
run: tools build $(if $(JAEGER),$(BIN)/.jaeger@$(JAEGER_VERSION))
	DATAPORT_DEV_JAEGER=$(JAEGER) bash deploy/dev/run.sh

bench: tools bench-export-rooms bench-export-records bench-split-records bench-scale
	for m in $(MODULES); do (cd $$m && go test -run '^$$' -bench . -benchmem ./...); done

# The gateway among many jobs (issue 13): the built gateway, nats-server
# and MinIO as separate processes, the projection filled to each of
# SCALE_SIZES jobs of other owners, vegeta at fixed rates, the gateway's
# RSS; figures in docs/BENCHMARKS.md. Several minutes at 1,000,000.
SCALE_SIZES ?= 10000,100000,1000000
bench-scale: tools
	cd services/gateway && go build -ldflags "$(LDFLAGS)" -o $(BIN)/dataport-gateway . && \
	  go run ./internal/scalebench/cmd/loadgen -bin $(BIN) -sizes $(SCALE_SIZES)

# Room exports beside a minimal pipeline (docs/BENCHMARKS.md): real
# nats-server and MinIO from bin/, DATAPORT_BENCH_MESSAGES messages
# (1,000,000), each case once, then the encoders alone on one core.
bench-export-rooms: tools
	cd services/room-exporter && DATAPORT_BENCH_ROOMS=1 GOWORK=off go test -run '^$$' -bench BesideBaseline -benchtime=1x -timeout 60m ./internal/roomexport/
	cd services/room-exporter && GOWORK=off go test -run '^$$' -bench Encode -benchmem -cpu 1 ./internal/roomexport/

# Record exports (csv, json, xml) of BENCH_RECORDS generated transactions
# beside a minimal pipeline in the same run, then the record encoders
# against the standard library's at GOMAXPROCS=1. BENCH_PROFILE=<dir>
# writes a CPU profile of every run there. See docs/BENCHMARKS.md.
BENCH_RECORDS ?= 1000000
bench-export-records: tools
	cd services/record-exporter && GOWORK=off DATAPORT_BENCH_EXPORT=1 DATAPORT_BENCH_RECORDS=$(BENCH_RECORDS) \
	  DATAPORT_BENCH_PROFILE=$(BENCH_PROFILE) \
	  go test -run '^$$' -bench '^BenchmarkRecordExports$$' -benchtime 1x -timeout 60m ./internal/recordexport/
	cd services/record-exporter && GOWORK=off go test -run '^$$' -bench '^BenchmarkEncode$$' -cpu 1 -benchmem ./internal/recordrender/

# One big record stream (SPLIT_RECORDS transactions, 10,000,000) exported
# into one file by 1 and by 2 record-exporter processes, the ranges
# joined by the archiver (docs/BENCHMARKS.md, "Split record exports"):
# the built binaries, nats-server and MinIO as their own processes.
SPLIT_RECORDS ?= 10000000
SPLIT_FORMATS ?= csv
SPLIT_ROOM_MESSAGES ?= 10000000
SPLIT_ROOM_FORMATS ?= json
bench-split-records: tools
	cd services/record-exporter && GOWORK=off DATAPORT_BENCH_SPLIT=1 DATAPORT_BENCH_RECORDS=$(SPLIT_RECORDS) \
	  DATAPORT_BENCH_FORMATS=$(SPLIT_FORMATS) \
	  go test -run '^$$' -bench '^BenchmarkSplitExport$$' -benchtime 1x -timeout 120m ./internal/recordexport/

bench-split-rooms: tools
	cd services/room-exporter && GOWORK=off DATAPORT_BENCH_SPLIT_ROOMS=1 DATAPORT_BENCH_MESSAGES=$(SPLIT_ROOM_MESSAGES) \
	  DATAPORT_BENCH_FORMATS=$(SPLIT_ROOM_FORMATS) \
	  go test -run '^$$' -bench '^BenchmarkSplitRoomExport$$' -benchtime 1x -timeout 120m ./internal/roomexport/

images:
	@if ! docker info >/dev/null 2>&1; then \
	  echo "make images: no Docker engine here ('docker info' failed); 'make test' checks the Dockerfiles statically (deploy module)"; \
	  exit 0; \
	fi; \
	for s in $(IMAGES); do \
	  echo "== dataport/$$s:dev"; \
	  docker build -f deploy/docker/$$s.Dockerfile --build-arg VERSION=$(VERSION) -t dataport/$$s:dev . ; \
	done

clean:
	rm -rf $(BIN) .dataport
