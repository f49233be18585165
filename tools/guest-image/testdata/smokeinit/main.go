// Command smokeinit is a stand-in /init for testing the guest image without
// the agent: it loads the modules listed in /etc/veil/modules the way the
// agent does (finit_module, in order), checks that the filesystems they
// provide are registered, that configfs-tsm is there and that each TEE
// driver of /etc/veil/modules-tee refuses to load with ENODEV (this VM is no
// TEE), runs runc and crun from the image, prints one line per
// check to the console and powers the VM off. The VM test reads the lines.
package main

import (
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

func loadModule(p string) syscall.Errno {
	f, err := os.Open(p)
	if err != nil {
		return syscall.ENOENT
	}
	defer f.Close()
	_, _, errno := syscall.Syscall(sysFinitModule, f.Fd(), uintptr(unsafe.Pointer(&empty[0])), 0)
	return errno
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
	for _, p := range strings.Fields(string(list)) {
		if errno := loadModule(p); errno != 0 && errno != syscall.EEXIST {
			return fmt.Errorf("loading module %s: %w", p, errno)
		}
		fmt.Println("smoke: loaded", p)
	}
	// configfs-tsm, the attestation report interface, is there on any machine.
	if err := syscall.Mount("configfs", "/sys/kernel/config", "configfs", 0, ""); err != nil {
		return fmt.Errorf("mounting configfs: %w", err)
	}
	if _, err := os.Stat("/sys/kernel/config/tsm/report"); err != nil {
		return fmt.Errorf("configfs-tsm: %w", err)
	}
	fmt.Println("smoke: configfs-tsm")
	// This VM is no TEE: each TEE driver must refuse with ENODEV.
	tee, err := os.ReadFile("/etc/veil/modules-tee")
	if err != nil {
		return err
	}
	for _, p := range strings.Fields(string(tee)) {
		if errno := loadModule(p); errno != syscall.ENODEV {
			return fmt.Errorf("loading TEE module %s outside a TEE: got errno %d (%v), want ENODEV", p, errno, errno)
		}
		fmt.Println("smoke: tee module refused (ENODEV)", p)
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
	for _, rt := range []string{"runc", "crun"} {
		out, err := exec.Command("/usr/bin/"+rt, "--version").CombinedOutput()
		if err != nil {
			return fmt.Errorf("running %s: %w: %s", rt, err, out)
		}
		fmt.Printf("smoke: %s %s", rt, strings.ReplaceAll(string(out), "\n", " | "))
		fmt.Println()
	}
	up, _ = os.ReadFile("/proc/uptime")
	fmt.Printf("smoke: done uptime %s", up)
	return nil
}
