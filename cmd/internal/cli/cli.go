// Package cli holds the command-line conventions every veil binary shares:
// what `--version` prints (the commit and the guest image's digest), that
// `--help` is a success, and that a flag after a positional argument is an
// error instead of being taken as an argument and silently ignored (the
// flag package stops at the first positional argument).
package cli

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"

	"github.com/veil-runtime/veil/runtimeclass/hostcheck"
)

// commit is set by the Makefile (-ldflags "-X .../cmd/internal/cli.commit=...",
// git describe); without it the Go toolchain's VCS stamp is used.
var commit string

// Commit is the source revision the binary was built from: the Makefile's
// stamp, else the toolchain's vcs.revision (with "-dirty" for a modified
// tree), else "unknown" (go run, or a build outside git).
func Commit() string {
	if commit != "" {
		return commit
	}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	var rev, dirty string
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "-dirty"
			}
		}
	}
	if rev == "" {
		return "unknown"
	}
	return rev + dirty
}

// GuestDirs are where a binary looks for the guest image's manifest.json,
// first found wins: beside an installed binary (BIN/../share/veil, what
// `veil install` lays out), beside a build (build/bin/../guest), and the
// installer's default.
func GuestDirs(exe string) []string {
	bin := filepath.Dir(exe)
	return []string{filepath.Join(bin, "..", "share", "veil"), filepath.Join(bin, "..", "guest"), hostcheck.DefaultGuestDir}
}

// GuestImage is the guest image's digest, the SHA-256 of its manifest.json
// (which holds the SHA-256 of each of its files), and the manifest's path;
// "" digest when none of dirs has one.
func GuestImage(dirs []string) (digest, path string) {
	for _, d := range dirs {
		p := filepath.Join(d, "manifest.json")
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		sum := sha256.Sum256(b)
		return "sha256:" + hex.EncodeToString(sum[:]), filepath.Clean(p)
	}
	return "", ""
}

// PrintVersion writes what `NAME --version` prints. withGuest adds the
// guest image line (not for the agent, which is inside that image).
func PrintVersion(w io.Writer, name string, withGuest bool) {
	fmt.Fprintf(w, "%s\n  commit: %s\n  go:     %s\n", name, Commit(), runtime.Version())
	if !withGuest {
		return
	}
	exe, _ := os.Executable()
	dirs := GuestDirs(exe)
	if d, p := GuestImage(dirs); d != "" {
		fmt.Fprintf(w, "  guest image: %s (%s)\n", d, p)
	} else {
		fmt.Fprintf(w, "  guest image: none found (looked for manifest.json in %s)\n", strings.Join(dirs, ", "))
	}
}

// IsVersion reports whether arg asks for the version.
func IsVersion(arg string) bool {
	return slices.Contains([]string{"version", "--version", "-version", "-v"}, arg)
}

// IsHelp reports whether arg asks for help.
func IsHelp(arg string) bool {
	return slices.Contains([]string{"help", "--help", "-help", "-h"}, arg)
}

// Parse parses args with fs, then refuses a flag left among the
// positional arguments ("resource set KEY FILE --url U" would otherwise
// run against the default URL with "--url" and "U" as extra arguments).
// Arguments after "--" are positional whatever they look like. -h and
// --help return flag.ErrHelp, which Exit treats as success.
func Parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	rest := fs.Args()
	if n := len(args) - len(rest); n > 0 && args[n-1] == "--" {
		return nil
	}
	for _, a := range rest {
		if len(a) > 1 && a[0] == '-' {
			return fmt.Errorf("%s: flag %s comes after the argument %q: put flags before arguments (or -- before an argument that starts with -)", fs.Name(), a, rest[0])
		}
	}
	return nil
}

// Exit ends a binary's main: nil and flag.ErrHelp exit 0, any other error
// is printed as "name: error" and exits 1.
func Exit(name string, err error) {
	if err == nil || errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	fmt.Fprintln(os.Stderr, name+":", err)
	os.Exit(1)
}
