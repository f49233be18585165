package main

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/veil-runtime/veil/shim"
)

func TestFindConsole(t *testing.T) {
	root := t.TempDir()
	mk := func(ns, id string, sock bool) {
		d := filepath.Join(root, ns, id)
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
		if sock {
			// The shim links the driver's socket into the state dir.
			l, err := net.Listen("unix", filepath.Join(d, "driver-console.sock"))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { l.Close() })
			if err := os.Symlink(filepath.Join(d, "driver-console.sock"), filepath.Join(d, shim.DebugConsoleLink)); err != nil {
				t.Fatal(err)
			}
		}
	}
	mk("k8s.io", "abc123", true)
	mk("k8s.io", "abc123456", true)
	mk("k8s.io", "fff000", true)
	mk("default", "fff111", true)
	mk("k8s.io", "noconsole", false)

	for _, tc := range []struct {
		arg, id, err string
	}{
		{arg: "abc123", id: "abc123"}, // exact beats the longer ID it prefixes
		{arg: "abc1234", id: "abc123456"},
		{arg: "fff1", id: "fff111"},
		{arg: "fff", err: "ambiguous: default/fff111, k8s.io/fff000"},
		{arg: "zzz", err: `no veil pod "zzz"`},
		{arg: "noconsole", err: "debug_console = false"},
		{arg: "../x", err: "want an ID"},
		{arg: "*", err: "want an ID"},
	} {
		t.Run(tc.arg, func(t *testing.T) {
			sock, id, err := findConsole(root, tc.arg)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("findConsole = %v, want an error containing %q", err, tc.err)
				}
				return
			}
			if err != nil || id != tc.id || filepath.Base(filepath.Dir(sock)) != tc.id {
				t.Fatalf("findConsole = %q %q %v, want %s", sock, id, err, tc.id)
			}
		})
	}
}

func TestDebugUsage(t *testing.T) {
	if err := debugCmd(nil, os.Stdout); err == nil || !strings.Contains(err.Error(), "usage: veil debug console") {
		t.Errorf("no subcommand: %v", err)
	}
	if err := debugCmd([]string{"console"}, os.Stdout); err == nil || !strings.Contains(err.Error(), "one sandbox ID") {
		t.Errorf("no sandbox: %v", err)
	}
}
