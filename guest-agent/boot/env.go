package boot

import (
	"os"
	"slices"
	"strings"
)

// Path is the PATH the agent and everything it starts (runc, the debug
// console) run with.
const Path = "PATH=/usr/sbin:/usr/bin:/sbin:/bin"

// Env is PID 1's whole environment. The kernel hands init every unknown
// name=value word of its command line as an environment variable, and the
// command line is the host's: LD_PRELOAD there would reach runc (a dynamic
// executable the agent starts), GODEBUG or GOGC the agent's own runtime.
// Nothing the host set is kept.
func Env() []string { return []string{Path} }

// EnvIsClean reports whether env is exactly Env: what PID 1 has after
// CleanStart re-executed it. The kernel always adds HOME=/ and TERM=linux,
// so the environment it starts init with is never clean.
func EnvIsClean(env []string) bool { return slices.Equal(env, Env()) }

// ClearEnv replaces the process's environment with Env. Clearing also
// resets the Go runtime's GODEBUG settings; variables the runtime reads
// only at start (GOGC, GOMAXPROCS, GOTRACEBACK) need the re-exec of
// CleanStart.
func ClearEnv() {
	os.Clearenv()
	for _, kv := range Env() {
		k, v, _ := strings.Cut(kv, "=")
		_ = os.Setenv(k, v)
	}
}
