// Command smokeinit is a stand-in /init for testing the guest image without
// the agent: it checks that the kernel has no module support (veil's kernel
// has everything built in), that what the guest uses is registered (9p,
// overlay, erofs, ext4 and tmpfs, vsock, the virtio drivers,
// device-mapper, iptables, configfs-tsm, cgroup v2), that no TEE guest
// device appears on this VM (it is no TEE), runs runc and crun from the
// image, prints one line per check to the console and powers the VM off.
// The VM test reads the lines.
package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

func main() {
	if err := run(); err != nil {
		fmt.Println("smoke: FAIL:", err)
	} else {
		fmt.Println("smoke: PASS")
	}
	syscall.Sync()
	syscall.Reboot(syscall.LINUX_REBOOT_CMD_POWER_OFF)
}

func ok(what string) { fmt.Println("smoke: ok", what) }

// contains reports whether file has a line whose fields include word.
func contains(file, word string) (bool, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return false, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		for _, f := range strings.Fields(l) {
			if f == word {
				return true, nil
			}
		}
	}
	return false, nil
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
	var u syscall.Utsname
	if err := syscall.Uname(&u); err != nil {
		return err
	}
	var rel []byte
	for _, c := range u.Release {
		if c == 0 {
			break
		}
		rel = append(rel, byte(c))
	}
	fmt.Printf("smoke: uname %s\n", rel)

	// No module support at all: no /proc/modules, nothing to load.
	if _, err := os.Stat("/proc/modules"); !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("/proc/modules: %v, want it absent (CONFIG_MODULES=n)", err)
	}
	ok("no modules")
	for _, want := range []string{"9p", "overlay", "erofs", "ext4", "tmpfs", "cgroup2", "configfs", "virtiofs"} {
		if found, err := contains("/proc/filesystems", want); err != nil || !found {
			return fmt.Errorf("filesystem %s not registered (%v)", want, err)
		}
		ok("filesystem " + want)
	}
	for _, drv := range []string{"virtio_net", "virtio_blk", "virtio_console", "9pnet_virtio", "vmw_vsock_virtio_transport", "virtio_pmem"} {
		if _, err := os.Stat("/sys/bus/virtio/drivers/" + drv); err != nil {
			return fmt.Errorf("virtio driver %s: %w", drv, err)
		}
		ok("driver " + drv)
	}
	fd, err := unix.Socket(unix.AF_VSOCK, unix.SOCK_STREAM, 0)
	if err != nil {
		return fmt.Errorf("creating a vsock socket: %w", err)
	}
	syscall.Close(fd)
	ok("vsock")
	if found, err := contains("/proc/misc", "device-mapper"); err != nil || !found {
		return fmt.Errorf("device-mapper not in /proc/misc (%v)", err)
	}
	ok("device-mapper")
	if found, err := contains("/proc/crypto", "xts(aes)"); err != nil {
		return err
	} else if !found {
		// xts(aes) registers when first used; the template must exist.
		if found, _ = contains("/proc/crypto", "aes"); !found {
			return errors.New("no aes in /proc/crypto (dm-crypt's aes-xts-plain64)")
		}
	}
	ok("aes")
	if _, err := os.Stat("/proc/net/ip_tables_names"); err != nil {
		return fmt.Errorf("iptables: %w", err)
	}
	ok("iptables")
	// configfs-tsm, the attestation report interface, is there on any machine.
	if err := syscall.Mount("configfs", "/sys/kernel/config", "configfs", 0, ""); err != nil {
		return fmt.Errorf("mounting configfs: %w", err)
	}
	if _, err := os.Stat("/sys/kernel/config/tsm/report"); err != nil {
		return fmt.Errorf("configfs-tsm: %w", err)
	}
	ok("configfs-tsm")
	// This VM is no TEE: the built-in drivers must not offer a device.
	for _, dev := range []string{"/dev/sev-guest", "/dev/tdx_guest"} {
		if _, err := os.Stat(dev); !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("%s on a VM that is no TEE: %v", dev, err)
		}
	}
	ok("no TEE device")
	if err := syscall.Mount("cgroup2", "/sys/fs/cgroup", "cgroup2", 0, ""); err != nil {
		return fmt.Errorf("mounting cgroup2: %w", err)
	}
	ctrl, err := os.ReadFile("/sys/fs/cgroup/cgroup.controllers")
	if err != nil {
		return err
	}
	for _, want := range []string{"cpuset", "cpu", "io", "memory", "hugetlb", "pids"} {
		if !strings.Contains(" "+strings.TrimSpace(string(ctrl))+" ", " "+want+" ") {
			return fmt.Errorf("cgroup v2 controller %s missing: %q", want, ctrl)
		}
	}
	ok("cgroup2 controllers")
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
