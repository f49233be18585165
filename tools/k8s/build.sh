#!/usr/bin/env bash
# Builds the pinned single-node Kubernetes the e2e tier runs (etcd,
# kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kubectl)
# from the Go module proxy into CACHE/k8s/KUBERNETES-VERSION/bin, idempotently:
# it does nothing when every binary is there with a stamp naming these pins.
# `make test` starts it in the background after `make deps` (it builds at
# nice 19, on what the earlier tiers leave of the CPUs) and TestKubernetes
# runs it again first (harness Env.BuildKubernetes): one build at a time (a
# lock in CACHE/k8s), so that second run waits for the first and then finds
# the binaries (or, when the first failed, builds and shows why). `make k8s`
# builds it in the foreground; `tools/k8s/build.sh CACHE` runs it alone.
#
# k8s.io/kubernetes and etcd's server module cannot be `go install`ed: their
# go.mod files point their sibling modules at local directories
# (`k8s.io/api => ./staging/src/k8s.io/api`, `go.etcd.io/etcd/api/v3 => ../api`),
# which only hold inside their own repositories. A small wrapper module per
# program requires the module and repeats those replace lines with the
# published versions instead. The builds run under nice (the machine is shared)
# and take a few minutes on 2 cores.
set -euo pipefail
cache=${1:?usage: build.sh CACHE_DIR}
cache=$(cd "$cache" && pwd)

KUBERNETES=v1.37.2 # k8s.io/kubernetes; its staging modules are v0.37.2
STAGING=v0.37.2
ETCD=v3.7.3 # go.etcd.io/etcd/server/v3; Kubernetes v1.37 uses the v3.7 client

dir=$cache/k8s/$KUBERNETES
bin=$dir/bin
stamp=$bin/.version
want="kubernetes $KUBERNETES etcd $ETCD"
programs=(etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl)

log() { echo "k8s: $*"; }

mkdir -p "$cache/k8s"
exec 9>"$cache/k8s/.lock"
if ! flock -n 9; then
	log "waiting for the Kubernetes build already running (make test starts it in the background: build/k8s-build.log)"
	flock 9
fi

present=1
for p in "${programs[@]}"; do [[ -x $bin/$p ]] || present=0; done
if ((present)) && [[ -f $stamp && $(cat "$stamp") == "$want" ]]; then
	log "Kubernetes $KUBERNETES and etcd $ETCD present in $bin"
	exit 0
fi
mkdir -p "$bin"
export CGO_ENABLED=0 GOFLAGS=-buildvcs=false GOWORK=off

# moddir NAME MODULE VERSION: writes the wrapper module's go.mod into
# $dir/src/NAME and prints that directory.
moddir() {
	local name=$1 mod=$2 version=$3 d=$dir/src/$1
	mkdir -p "$d"
	{
		echo "module veil.local/k8sbuild/$name"
		echo
		echo "go 1.26.0"
		echo
		echo "require $mod $version"
	} >"$d/go.mod"
	echo "$d"
}

# The replace lines of MODULE@VERSION's go.mod that point at a local
# directory, rewritten to NEWVERSION of the same module.
replaces() {
	local mod=$1 version=$2 newversion=$3 gomod
	gomod=$(cd / && go mod download -json "$mod@$version" | sed -n 's/^\t"GoMod": "\(.*\)",$/\1/p')
	sed -n 's#^[[:space:]]*\([^[:space:]]*\) => \.\{1,2\}/[^[:space:]]*$#\1#p' "$gomod" |
		grep -v '^go.etcd.io/etcd$\|^go.etcd.io/tests/v3$' |
		while read -r m; do echo "replace $m => $m $newversion"; done
}

# Kubernetes version strings, as its own build (hack/lib/version.sh) sets them:
# the kubelet reports it to the API server and kubectl prints it.
major=${KUBERNETES#v}
major=${major%%.*}
minor=${KUBERNETES#v*.}
minor=${minor%%.*}
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
	ldflags+=" -X $pkg.gitVersion=$KUBERNETES -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
	ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done

log "building Kubernetes $KUBERNETES (kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kubectl)"
k=$(moddir kubernetes k8s.io/kubernetes "$KUBERNETES")
replaces k8s.io/kubernetes "$KUBERNETES" "$STAGING" >>"$k/go.mod"
k8spkgs=()
for p in kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl; do
	k8spkgs+=("k8s.io/kubernetes/cmd/$p")
done
(
	cd "$k"
	go get "${k8spkgs[@]/%/@$KUBERNETES}"
	# -mod=mod: go get records the sums of the packages it resolved, not
	# of every package the programs import (kubectl's in particular).
	nice -n 19 go build -mod=mod -trimpath -ldflags "$ldflags" -o "$bin/" "${k8spkgs[@]}"
)

log "building etcd $ETCD"
e=$(moddir etcd go.etcd.io/etcd/server/v3 "$ETCD")
replaces go.etcd.io/etcd/server/v3 "$ETCD" "$ETCD" >>"$e/go.mod"
(
	cd "$e"
	go get "go.etcd.io/etcd/server/v3@$ETCD"
	nice -n 19 go build -mod=mod -trimpath -ldflags "-s -w" -o "$bin/etcd" go.etcd.io/etcd/server/v3
)

echo "$want" >"$stamp"
log "built into $bin"
