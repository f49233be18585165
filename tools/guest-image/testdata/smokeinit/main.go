// Command smokeinit is a stand-in /init for testing the guest image without
// the agent: it loads the modules listed in /etc/veil/modules the way the
// agent does (finit_module, in order), checks that the filesystems they
// provide are registered, runs runc from the image, prints one line per
// check to the console and powers the VM off. The VM test reads the lines.
package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"unsafe"
)

var empty = []byte{0}

// sysFinitModule is finit_module(2) on amd64 (not in package syscall).
const sysFinitModule = 313

func main() {
	if err := run(); err != nil {
		fmt.Println("smoke: FAIL:", err)
	} else {
		fmt.Println("smoke: PASS")
	}
	syscall.Sync()
	syscall.Reboot(syscall.LINUX_REBOOT_CMD_POWER_OFF)
}

func run() error {
	for _, m := range []struct{ src, dst, fstype string }{
		{"proc", "/proc", "proc"}, {"sysfs", "/sys", "sysfs"}, {"devtmpfs", "/dev", "devtmpfs"},
	} {
		if err := syscall.Mount(m.src, m.dst, m.fstype, 0, ""); err != nil {
			return fmt.Errorf("mounting %s: %w", m.dst, err)
		}
	}
	up, _ := os.ReadFile("/proc/uptime")
	fmt.Printf("smoke: init uptime %s", up)
	list, err := os.ReadFile("/etc/veil/modules")
	if err != nil {
		return err
	}
	sc := bufio.NewScanner(strings.NewReader(string(list)))
	for sc.Scan() {
		p := sc.Text()
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		_, _, errno := syscall.Syscall(sysFinitModule, f.Fd(), uintptr(unsafe.Pointer(&empty[0])), 0)
		f.Close()
		if errno != 0 && errno != syscall.EEXIST {
			return fmt.Errorf("loading module %s: %w", p, errno)
		}
		fmt.Println("smoke: loaded", p)
	}
	fs, err := os.ReadFile("/proc/filesystems")
	if err != nil {
		return err
	}
	for _, want := range []string{"9p", "overlay"} {
		if !strings.Contains(string(fs), "\t"+want+"\n") {
			return fmt.Errorf("filesystem %s not registered after loading modules", want)
		}
		fmt.Println("smoke: filesystem", want)
	}
	for _, want := range []string{"vsock", "virtio_net", "virtio_blk", "dm_crypt"} {
		if _, err := os.Stat("/sys/module/" + want); err != nil {
			return fmt.Errorf("module %s not loaded: %w", want, err)
		}
		fmt.Println("smoke: module", want)
	}
	out, err := exec.Command("/usr/bin/runc", "--version").CombinedOutput()
	if err != nil {
		return fmt.Errorf("running runc: %w: %s", err, out)
	}
	fmt.Printf("smoke: runc %s", strings.ReplaceAll(string(out), "\n", " | "))
	fmt.Println()
	up, _ = os.ReadFile("/proc/uptime")
	fmt.Printf("smoke: done uptime %s", up)
	return nil
}
