# veil: a containerd runtime that runs each pod in its own lightweight VM.
# `make help` lists the targets.

SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
GO ?= go
CACHE := $(CURDIR)/.cache
# build/ is fixed (override): the e2e harness, the demo and the benchmark run
# the binaries and guest image from <repo>/build, so another OUT would build
# where they do not look.
override OUT := $(CURDIR)/build
GOBIN := $(CACHE)/bin
export PATH := $(GOBIN):$(PATH)
GUEST := $(OUT)/guest

BINARIES := containerd-shim-veil-v2 veil-agent veil-kbs veil veil-snapshotter
# --version prints this commit (cmd/internal/cli); without it, the Go
# toolchain's vcs.revision stamp.
VERSION_LDFLAGS := -X github.com/veil-runtime/veil/cmd/internal/cli.commit=$(shell git describe --always --dirty 2>/dev/null)
# -s -w: no symbol table or DWARF in the built binaries, about a third of
# each file (the shim: 28 -> 19 MB); panics and logs still name functions
# (from the runtime's own tables), and resident memory is the same (neither
# is loaded). A debugger needs a build without them.
LDFLAGS := -s -w $(VERSION_LDFLAGS)

.PHONY: help
help: ## show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: deps
deps: ## install what veil needs on Debian 12 (apt packages, pinned Go tools, guest kernel source); idempotent
	tools/deps.sh

.PHONY: k8s
k8s: ## build the e2e tier's pinned Kubernetes and etcd into .cache/k8s (once; TestKubernetes needs them)
	tools/k8s/build.sh $(CACHE)

# make test starts the Kubernetes build in the background, at nice 19, right
# after deps: it uses what the lint, unit, fuzz and VM tiers and critest
# leave of the CPUs, and TestKubernetes waits for it (tools/k8s/build.sh's
# lock) instead of the whole run paying it up front.
.PHONY: k8s-background
k8s-background:
	$(if $(filter 1,$(E2E_KUBERNETES)),mkdir -p $(OUT) && echo "k8s: building in the background (log: $(OUT)/k8s-build.log)" && \
		{ nohup tools/k8s/build.sh $(CACHE) >$(OUT)/k8s-build.log 2>&1 </dev/null & })

# RACE=1 builds the host binaries (shim, veil, veil-kbs, veil-snapshotter)
# with the race detector; the e2e tier then fails on any race report they
# write (tools/e2e/harness/race.go). The agent stays static and cgo-free.
# `make test` sets it: its e2e and install tiers run race-built host binaries.
RACE ?= 0
HOST_BINARIES := $(filter-out veil-agent,$(BINARIES))

.PHONY: build
build: ## build the binaries into build/bin (RACE=1: host binaries with -race)
	@mkdir -p $(OUT)/bin
	$(if $(filter 1,$(RACE)), \
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(OUT)/bin/ ./cmd/veil-agent && \
	CGO_ENABLED=1 $(GO) build -race -trimpath -ldflags "$(LDFLAGS)" -o $(OUT)/bin/ $(addprefix ./cmd/,$(HOST_BINARIES)), \
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(OUT)/bin/ $(addprefix ./cmd/,$(BINARIES)))

.PHONY: proto
proto: ## regenerate guest-agent/api from agent.proto
	protoc -I guest-agent/api -I /usr/include \
		--go_out=. --go_opt=module=github.com/veil-runtime/veil \
		--go-ttrpc_out=. --go-ttrpc_opt=module=github.com/veil-runtime/veil \
		guest-agent/api/agent.proto
	$(GO) test ./guest-agent/api -run TestMethodNames -update

.PHONY: proto-check
proto-check: ## fail when the committed generated code differs from agent.proto
	tools/proto-check.sh

.PHONY: guest-image
guest-image: ## build the guest kernel + initramfs + manifest into build/guest
	$(GO) run ./tools/guest-image -out $(GUEST) -cache $(CACHE)

.PHONY: test
test: RACE := 1
test: E2E_KUBERNETES := 1
test: deps k8s-background proto-check lint test-unit fuzz test-vm test-e2e test-install ## run every test tier (lint, unit, fuzz, VM, end to end with Kubernetes)

.PHONY: test-unit
test-unit: ## unit tests with the race detector and goroutine leak checks: no VM
	$(GO) vet ./...
	$(GO) test -race -count=1 ./...

.PHONY: lint
lint: ## golangci-lint (the version tools/deps.sh pins) with .golangci.yml
	golangci-lint run ./...

# Seconds (a go test -fuzztime) each fuzz target runs for in `make fuzz`.
FUZZTIME ?= 10s
# Every func FuzzX(f *testing.F) in a _test.go file, as "dir:FuzzX".
FUZZ_TARGETS = $(shell grep -rlE --include='*_test.go' --exclude-dir=.cache --exclude-dir=build '^func Fuzz[A-Za-z0-9_]+\(f \*testing\.F\)' . | \
	xargs -r grep -oE '^func Fuzz[A-Za-z0-9_]+' -H | sed -E 's|^\./||; s|/[^/]*_test\.go:func |:|' | sort)

.PHONY: fuzz
fuzz: ## run every fuzz target for FUZZTIME each (default 10s), seeds and testdata/fuzz corpus first
	@set -e; for t in $(FUZZ_TARGETS); do \
		dir=$${t%%:*}; name=$${t##*:}; \
		echo "fuzz: $$name ./$$dir ($(FUZZTIME))"; \
		GO=$(GO) tools/fuzz.sh $$dir $$name $(FUZZTIME); \
	done

.PHONY: test-vm
test-vm: guest-image ## VM tests: real QEMU VMs with the real guest image and agent
	VEIL_GUEST_DIR=$(GUEST) VEIL_CACHE_DIR=$(CACHE) $(GO) test -count=1 -tags vm -timeout 60m -v ./tools/vmtest/... ./tools/guest-image/...

# CRI handlers the end-to-end tier and the demo run under. The veil handler
# needs the shim (make build) and the guest image; runc needs neither.
E2E_HANDLERS ?= runc,veil,veil-dev
E2E_RUN ?= .
DEMO_HANDLERS ?= runc,veil,veil-dev
# 1 runs TestKubernetes: a single-node Kubernetes (make k8s builds it; the
# test builds it when missing), the installer DaemonSet, a veil Deployment
# driven with kubectl. make test sets it.
E2E_KUBERNETES ?= 0
comma := ,
e2e_needs = $(if $(findstring veil,$(1)),guest-image build)

.PHONY: test-kernel-repro
test-kernel-repro: ## build the guest image twice, compiling the kernel both times, and compare (about 16 min more)
	VEIL_KERNEL_REPRO=1 VEIL_CACHE_DIR=$(CACHE) $(GO) test -count=1 -tags vm -timeout 60m -v -run '^TestBuildIsReproducible$$' ./tools/guest-image/

.PHONY: test-e2e
test-e2e: $(call e2e_needs,$(E2E_HANDLERS)$(if $(filter 1,$(E2E_KUBERNETES)),veil)) ## end to end: private containerd, ctr, crictl, critest, local registry, Kubernetes (E2E_HANDLERS=runc,veil E2E_RUN=regexp E2E_KUBERNETES=1)
	rm -rf $(OUT)/e2e-logs && mkdir -p $(OUT)/e2e-logs
	VEIL_E2E_HANDLERS=$(E2E_HANDLERS) VEIL_E2E_LOGS=$(OUT)/e2e-logs \
		$(GO) test -count=1 -tags e2e$(if $(filter 1,$(E2E_KUBERNETES)),$(comma)kubernetes) -timeout 180m -v -run '$(value E2E_RUN)' ./tools/e2e/

.PHONY: test-install
test-install: guest-image build ## end to end: veil install into the private containerd, a pod on veil, veil uninstall restores its config
	$(GO) test -count=1 -tags e2e -timeout 30m -v -run TestInstallRunUninstall ./runtimeclass/

.PHONY: installer-image
installer-image: guest-image build ## build the installer DaemonSet's image into build/veil-installer.tar (ctr images import)
	$(GO) run ./tools/installer-image -bin $(OUT)/bin -guest $(GUEST) -out $(OUT)/veil-installer.tar -version "$$(git describe --always --dirty 2>/dev/null || echo dev)"

.PHONY: demo
demo: deps guest-image build ## run a pod in a veil VM next to runc and print what each container saw
	$(GO) run ./tools/e2e/demo -handlers $(DEMO_HANDLERS) -logs $(OUT)/demo-logs

# Flags for tools/bench, e.g. a quick run: BENCH_ARGS="-runs 2 -concurrency 1,2 -idle 1,3 -pull-mib 0",
# or only the guest pull: BENCH_ARGS="-pull-only -pull-runs 1".
BENCH_ARGS ?=

.PHONY: bench
bench: guest-image build ## benchmark veil next to runc: pod start phases, bare boot, memory per idle pod, concurrency, guest pull (BENCH_ARGS=...)
	$(GO) run ./tools/bench -out $(OUT)/bench -logs $(OUT)/bench-logs $(BENCH_ARGS)

.PHONY: clean
clean: ## remove build outputs (keeps the download cache)
	rm -rf $(OUT)
