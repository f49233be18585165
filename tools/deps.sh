#!/usr/bin/env bash
# Installs everything veil needs on a Debian 12 machine, as root, idempotently:
# apt packages, pinned Go tools (into .cache/bin), the pinned guest kernel
# source package (into .cache/kernel; make guest-image builds the kernel).
# `make deps` runs it; `make test` and `make demo` run it first.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
cache=$root/.cache
export GOBIN=$cache/bin
mkdir -p "$GOBIN"

# Pinned versions. The guest kernel's source is pinned in tools/guest-image (KernelPin) and fetched at the end.
PROTOC_GEN_GO=v1.36.12          # google.golang.org/protobuf
PROTOC_GEN_GO_TTRPC=v1.2.10     # github.com/containerd/ttrpc
CONTAINERD=v2.4.2               # github.com/containerd/containerd/v2
CRI_TOOLS=v1.37.0               # sigs.k8s.io/cri-tools (crictl, critest)
GINKGO=v2.32.1                  # github.com/onsi/ginkgo/v2: the CLI `critest -parallel N` runs (cri-tools v1.37.0's version)
GOLANGCI_LINT=v2.15.0           # github.com/golangci/golangci-lint/v2 (make lint; built with this Go)
NERDCTL=v2.4.2                  # github.com/containerd/nerdctl/v2 (the e2e tier's TestNerdctlDefaultNetwork)
# nerdctl v2.4.2 requires github.com/moby/moby/v2 v2.0.0-beta.28, which the
# module proxy does not serve ("This module version is not available");
# nerdctl uses only its pkg/meminfo and pkg/sysinfo (host facts for
# `nerdctl info`), and builds with beta.25, which the proxy serves.
NERDCTL_MOBY=v2.0.0-beta.25

APT_PACKAGES=(
	qemu-system-x86 qemu-utils   # the hypervisor (TCG here, KVM where available)
	crun                         # the guest's default OCI runtime (copied into the initramfs)
	runc                         # the guest's fallback OCI runtime, veil.oci_runtime=runc (copied too)
	busybox-static               # guest debugging and the e2e tier's busybox:static image
	protobuf-compiler libprotobuf-dev  # make proto
	cpio kmod zstd xz-utils lz4 erofs-utils  # guest image tooling (lz4 compresses the initramfs; mkfs.erofs writes rootfs.erofs)
	build-essential bc flex bison libelf-dev libssl-dev  # building the guest kernel (tools/guest-image)
	containernetworking-plugins iproute2 iptables  # CNI for the e2e tier
	dbus-daemon                  # the installer's systemd-restart unit test runs a private bus
	gcc libc6-dev                 # cgo, which -race needs (make test-unit, RACE=1 builds)
	ca-certificates git util-linux
)

log() { echo "deps: $*"; }

missing=()
for p in "${APT_PACKAGES[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
	log "installing apt packages: ${missing[*]}"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
	log "apt packages present"
fi

# gotool NAME MODULE@VERSION [go install flags...]: installs when the binary
# is missing or was built from another version (stamp file beside it).
gotool() {
	local name=$1 mod=$2
	shift 2
	local stamp=$GOBIN/.$name.version
	if [[ -x $GOBIN/$name && -f $stamp && $(cat "$stamp") == "$mod $*" ]]; then
		return
	fi
	log "go install $mod"
	go install "$@" "$mod"
	echo "$mod $*" >"$stamp"
}

gotool protoc-gen-go google.golang.org/protobuf/cmd/protoc-gen-go@$PROTOC_GEN_GO
gotool protoc-gen-go-ttrpc github.com/containerd/ttrpc/cmd/protoc-gen-go-ttrpc@$PROTOC_GEN_GO_TTRPC
gotool containerd github.com/containerd/containerd/v2/cmd/containerd@$CONTAINERD -tags no_btrfs
gotool containerd-shim-runc-v2 github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2@$CONTAINERD
gotool ctr github.com/containerd/containerd/v2/cmd/ctr@$CONTAINERD
gotool crictl sigs.k8s.io/cri-tools/cmd/crictl@$CRI_TOOLS
gotool ginkgo github.com/onsi/ginkgo/v2/ginkgo@$GINKGO
gotool golangci-lint github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$GOLANGCI_LINT

# critest is a Go test binary, not a command: build it from the cri-tools
# module's own source directory, with that module's go.mod.
critest_stamp=$GOBIN/.critest.version
if [[ ! -x $GOBIN/critest || ! -f $critest_stamp || $(cat "$critest_stamp") != "sigs.k8s.io/cri-tools@$CRI_TOOLS" ]]; then
	log "go test -c sigs.k8s.io/cri-tools@$CRI_TOOLS/cmd/critest"
	critest_src=$(cd / && go mod download -json "sigs.k8s.io/cri-tools@$CRI_TOOLS" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
	(cd "$critest_src" && GOFLAGS=-mod=mod CGO_ENABLED=0 go test -c -o "$GOBIN/critest" ./cmd/critest)
	echo "sigs.k8s.io/cri-tools@$CRI_TOOLS" >"$critest_stamp"
fi

# nerdctl's go.mod has a replace directive (so `go install mod@version`
# refuses it) and a requirement the proxy does not serve (NERDCTL_MOBY):
# built from a writable copy of its module source with that one requirement
# replaced (about 3 minutes on a busy 2-core machine).
nerdctl_stamp=$GOBIN/.nerdctl.version
if [[ ! -x $GOBIN/nerdctl || ! -f $nerdctl_stamp || $(cat "$nerdctl_stamp") != "github.com/containerd/nerdctl/v2@$NERDCTL moby/v2@$NERDCTL_MOBY" ]]; then
	log "go build github.com/containerd/nerdctl/v2@$NERDCTL/cmd/nerdctl"
	nerdctl_mod=$(cd / && go mod download -json "github.com/containerd/nerdctl/v2@$NERDCTL" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
	nerdctl_src=$(mktemp -d)
	cp -r "$nerdctl_mod/." "$nerdctl_src"
	chmod -R u+w "$nerdctl_src"
	(cd "$nerdctl_src" &&
		go mod edit -replace "github.com/moby/moby/v2=github.com/moby/moby/v2@$NERDCTL_MOBY" &&
		GOFLAGS=-mod=mod CGO_ENABLED=0 go build -trimpath \
			-ldflags "-s -w -X github.com/containerd/nerdctl/v2/pkg/version.Version=$NERDCTL" \
			-o "$GOBIN/nerdctl" ./cmd/nerdctl) || { rm -rf "$nerdctl_src"; exit 1; }
	rm -rf "$nerdctl_src"
	echo "github.com/containerd/nerdctl/v2@$NERDCTL moby/v2@$NERDCTL_MOBY" >"$nerdctl_stamp"
fi

# Debian's dynamically linked busybox for the e2e tier's busybox image (it
# execs applets as real processes). It conflicts with busybox-static, so it
# is unpacked into the cache instead of installed.
debs=$cache/debs
if [[ ! -x $debs/busybox/bin/busybox ]]; then
	log "fetching Debian's busybox package into $debs"
	mkdir -p "$debs"
	rm -rf "$debs"/busybox_*.deb "$debs/busybox"
	(cd "$debs" && apt-get download -qq -o APT::Sandbox::User=root busybox)
	dpkg-deb -x "$debs"/busybox_*.deb "$debs/busybox"
fi

# The e2e tier's single-node Kubernetes is not built here: `make k8s` builds
# it, and `make test` builds it in the background (tools/k8s/build.sh).

# The guest kernel's source package (linux-source-6.12), pinned by KernelPin in
# tools/guest-image/guestimage/kernel.go: downloaded into .cache/kernel once (not
# installed: /usr/src stays as it is); says which versions exist when the pin is gone.
go run ./tools/guest-image -cache "$cache" -fetch-only
log "done"
