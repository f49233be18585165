package containers

import (
	"bufio"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// OOMKills returns the oom_kill count of a cgroup2 memory.events file.
func OOMKills(memoryEvents string) uint64 {
	sc := bufio.NewScanner(strings.NewReader(memoryEvents))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), " ")
		if ok && k == "oom_kill" {
			n, _ := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
			return n
		}
	}
	return 0
}

// watchOOM reports the container to OOM each time its cgroup's oom_kill
// count grows; the returned function stops watching.
func (m *Manager) watchOOM(id string) func() {
	path := filepath.Join(m.cfg.CgroupRoot, CgroupPath(id), "memory.events")
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		m.cfg.Log.Warn("watching for OOM kills", "id", id, "err", err)
		return func() {}
	}
	if _, err := unix.InotifyAddWatch(fd, path, unix.IN_MODIFY); err != nil {
		unix.Close(fd)
		m.cfg.Log.Warn("watching for OOM kills", "id", id, "path", path, "err", err)
		return func() {}
	}
	f := os.NewFile(uintptr(fd), "inotify:"+path)
	read := func() uint64 {
		b, _ := os.ReadFile(path)
		return OOMKills(string(b))
	}
	seen := read()
	go func() {
		buf := make([]byte, 4096)
		for {
			if _, err := f.Read(buf); err != nil {
				return
			}
			if n := read(); n > seen {
				seen = n
				m.cfg.Log.Info("container OOM-killed a process", "id", id, "oom_kill", n)
				select {
				case m.oom <- id:
				default:
					m.cfg.Log.Warn("OOM event dropped: nobody is asking", "id", id)
				}
			}
		}
	}()
	return func() { _ = f.Close() }
}

// OOMEvent blocks until a container is OOM-killed and returns its ID.
func (m *Manager) OOMEvent(ctx context.Context) (string, error) {
	select {
	case id := <-m.oom:
		return id, nil
	case <-ctx.Done():
		return "", ctx.Err()
	}
}
