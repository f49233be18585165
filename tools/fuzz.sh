#!/usr/bin/env bash
# Runs one Go fuzz target: tools/fuzz.sh DIR NAME FUZZTIME.
#
# Go 1.26's fuzzing coordinator can end a duration-limited run with a bare
# "context deadline exceeded" failure when -fuzztime expires while a worker
# is mid-call (go.dev/issue/75804, fixed in Go 1.27). That failure names no
# input and writes none. This script reruns the target when, and only when,
# a run fails with exactly that signature; any other failure (a crasher, a
# failing seed, a build error) fails at once, and the race hitting three
# runs in a row fails too.
set -uo pipefail
dir=$1 name=$2 fuzztime=$3
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for attempt in 1 2 3; do
	"${GO:-go}" test -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" "./$dir" 2>&1 | tee "$log"
	rc=${PIPESTATUS[0]}
	[ "$rc" -eq 0 ] && exit 0
	# The coordinator race: the target's only failure line is the deadline,
	# and no failing input was written.
	if grep -q 'Failing input written to' "$log" ||
		grep -qE '^\s+[a-z_]+\.go:[0-9]+:|panic:|fuzz: minimizing' "$log" ||
		! grep -qE "^--- FAIL: ${name} \(" "$log" ||
		[ "$(grep -A1 -E "^--- FAIL: ${name} \(" "$log" | tail -1 | tr -d '[:space:]')" != "contextdeadlineexceeded" ]; then
		exit "$rc"
	fi
	echo "fuzz: $name: go.dev/issue/75804 (deadline race in the fuzzing coordinator, no input found); run $attempt of 3, again"
done
echo "fuzz: $name: the coordinator's deadline race three runs in a row" >&2
exit 1
