#!/usr/bin/env bash
# Regenerates the agent API into a temporary tree and fails on any difference
# from the committed code.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
protoc -I guest-agent/api -I /usr/include \
	--go_out="$tmp" --go_opt=module=github.com/veil-runtime/veil \
	--go-ttrpc_out="$tmp" --go-ttrpc_opt=module=github.com/veil-runtime/veil \
	guest-agent/api/agent.proto
for f in agent.pb.go agent_ttrpc.pb.go; do
	if ! diff -u "guest-agent/api/$f" "$tmp/guest-agent/api/$f"; then
		echo "proto-check: guest-agent/api/$f is stale: run 'make proto' and commit" >&2
		exit 1
	fi
done
echo "proto-check: generated code matches agent.proto"
