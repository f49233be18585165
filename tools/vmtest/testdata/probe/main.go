// Command probe runs inside a test container and reports what a process
// there can do (tools/vmtest/hardening_test.go):
//
//	probe escape   the classic chroot escape (needs CAP_SYS_CHROOT): chroot
//	               into a subdirectory without entering it, climb out with
//	               "..", chroot there; prints "escaped" and the names it
//	               then sees at /
//	probe escape-ns   the escape for CAP_SYS_ADMIN: detach the container's
//	               root mount, then re-enter the own mount namespace, which
//	               puts the root at the namespace's root mount; prints
//	               "escaped" and the names it then sees at /
//	probe euid     prints "euid=<n>" (run setuid to see whether it took)
//	probe environ  prints the environment of pid 1 and its own, one
//	               variable a line
//	probe mmap PATH TEXT [PATH TEXT...]   writes TEXT into PATH (created
//	               or truncated) through a writable MAP_SHARED mapping,
//	               msync(MS_SYNC), munmap; prints "PATH ok" for each
package main

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

func main() {
	if len(os.Args) < 2 {
		fail(fmt.Errorf("usage: probe escape|euid|environ"))
	}
	switch os.Args[1] {
	case "escape":
		fail(escape())
	case "escape-ns":
		fail(escapeNS())
	case "mmap":
		if len(os.Args) < 4 || len(os.Args)%2 != 0 {
			fail(fmt.Errorf("usage: probe mmap PATH TEXT [PATH TEXT...]"))
		}
		for i := 2; i < len(os.Args); i += 2 {
			if err := mmapWrite(os.Args[i], os.Args[i+1]); err != nil {
				fail(fmt.Errorf("%s: %w", os.Args[i], err))
			}
			fmt.Printf("%s ok\n", os.Args[i])
		}
	case "euid":
		fmt.Printf("euid=%d\n", os.Geteuid())
	case "environ":
		b, err := os.ReadFile("/proc/1/environ")
		if err != nil {
			fail(err)
		}
		for _, kv := range strings.Split(string(b), "\x00") {
			if kv != "" {
				fmt.Println("pid1:", kv)
			}
		}
		for _, kv := range os.Environ() {
			fmt.Println("self:", kv)
		}
	default:
		fail(fmt.Errorf("unknown probe %q", os.Args[1]))
	}
}

func escape() error {
	if err := os.MkdirAll("/tmp/jail", 0o700); err != nil {
		return err
	}
	if err := syscall.Chroot("/tmp/jail"); err != nil {
		return fmt.Errorf("chroot into the jail: %w", err)
	}
	// The working directory is now outside the root: ".." is not stopped.
	for range 64 {
		if err := syscall.Chdir(".."); err != nil {
			return fmt.Errorf("climbing: %w", err)
		}
	}
	if err := syscall.Chroot("."); err != nil {
		return fmt.Errorf("chroot at the top: %w", err)
	}
	return report()
}

func escapeNS() error {
	// setns(CLONE_NEWNS) needs a thread with its own fs_struct.
	runtime.LockOSThread()
	if err := unix.Unshare(unix.CLONE_FS); err != nil {
		return fmt.Errorf("unshare(CLONE_FS): %w", err)
	}
	ns, err := unix.Open("/proc/self/ns/mnt", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	if err := unix.Chdir("/"); err != nil {
		return err
	}
	if err := unix.Unmount("/", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("detaching the root mount: %w", err)
	}
	if err := unix.Setns(ns, unix.CLONE_NEWNS); err != nil {
		return fmt.Errorf("re-entering the mount namespace: %w", err)
	}
	return report()
}

// report prints what / holds and which guest files are visible.
func report() error {
	entries, err := os.ReadDir("/")
	if err != nil {
		return err
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	fmt.Printf("escaped: %s\n", strings.Join(names, " "))
	for _, p := range []string{"/init", "/usr/bin/runc", "/usr/bin/crun", "/run/veil/containers"} {
		if _, err := os.Lstat(p); err == nil {
			fmt.Printf("visible: %s\n", p)
		}
	}
	return nil
}

func fail(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "probe:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// mmapWrite writes text into path through a shared writable mapping.
func mmapWrite(path, text string) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Truncate(int64(len(text))); err != nil {
		return fmt.Errorf("truncating: %w", err)
	}
	m, err := unix.Mmap(int(f.Fd()), 0, len(text), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return fmt.Errorf("mmap MAP_SHARED PROT_WRITE: %w", err)
	}
	copy(m, text)
	if err := unix.Msync(m, unix.MS_SYNC); err != nil {
		return fmt.Errorf("msync: %w", err)
	}
	return unix.Munmap(m)
}
