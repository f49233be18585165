// Package transport gives the agent's ttrpc server its listeners: the
// virtio-serial port named "veil.agent" (a character device wrapped as a
// net.Listener that hands out one connection at a time and reopens the port
// after the host disconnects) and vsock port 1024.
package transport

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Names recorded in GuestDetails.
const (
	Serial = "virtio-serial"
	Vsock  = "vsock"
)

// FindPort returns the device name (vportNpM) of the virtio-serial port
// called name, looking in sysfs (normally /sys/class/virtio-ports), and its
// "major:minor" device number.
func FindPort(sysfs, name string) (dev string, number string, err error) {
	names, err := filepath.Glob(filepath.Join(sysfs, "*", "name"))
	if err != nil {
		return "", "", fmt.Errorf("listing virtio ports: %w", err)
	}
	for _, n := range names {
		b, err := os.ReadFile(n)
		if err != nil || strings.TrimSpace(string(b)) != name {
			continue
		}
		dir := filepath.Dir(n)
		num, err := os.ReadFile(filepath.Join(dir, "dev"))
		if err != nil {
			return "", "", fmt.Errorf("reading device number of virtio port %s: %w", name, err)
		}
		return filepath.Base(dir), strings.TrimSpace(string(num)), nil
	}
	return "", "", fmt.Errorf("virtio-serial port %q not found in %s: %w", name, sysfs, os.ErrNotExist)
}

// ParseDevNumber parses a sysfs "major:minor" device number.
func ParseDevNumber(s string) (uint64, error) {
	maj, min, ok := strings.Cut(strings.TrimSpace(s), ":")
	if !ok {
		return 0, fmt.Errorf("device number %q is not major:minor", s)
	}
	a, err := strconv.ParseUint(maj, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("device number %q: %w", s, err)
	}
	b, err := strconv.ParseUint(min, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("device number %q: %w", s, err)
	}
	return unix.Mkdev(uint32(a), uint32(b)), nil
}

// PortDevice returns the /dev path of the virtio-serial port called name,
// creating the device node from sysfs when devtmpfs has not.
func PortDevice(name string) (string, error) {
	dev, num, err := FindPort("/sys/class/virtio-ports", name)
	if err != nil {
		return "", err
	}
	path := filepath.Join("/dev", dev)
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	n, err := ParseDevNumber(num)
	if err != nil {
		return "", err
	}
	if err := unix.Mknod(path, unix.S_IFCHR|0o600, int(n)); err != nil && !errors.Is(err, unix.EEXIST) {
		return "", fmt.Errorf("creating device node %s: %w", path, err)
	}
	return path, nil
}

// hostPollInterval is how often a port whose host side is not connected is
// checked again; the port offers no wake-up for a host connecting.
const hostPollInterval = 20 * time.Millisecond

// SerialListener serves connections on a virtio-serial port. The port is
// one byte stream with no connection boundaries, so the listener keeps the
// port open and makes them: Accept returns one connection at a time, once
// the host side is connected; a connection ends (io.EOF) when the host
// disconnects, or when a new host client has taken over the stream, which
// shows as a ttrpc request whose stream ID does not increase (a client
// counts from 1). A quick reconnect can hide the disconnect from the guest
// entirely; the stream ID check still catches it, and the new client's
// first bytes go to the next connection.
type SerialListener struct {
	path   string
	closed chan struct{}
	once   sync.Once
	// free has one token while no connection is open.
	free chan struct{}

	mu     sync.Mutex
	fd     int
	port   *framer
	active bool // a connection is open
}

// ListenSerial returns a listener on the port device at path.
func ListenSerial(path string) *SerialListener {
	l := &SerialListener{path: path, closed: make(chan struct{}), free: make(chan struct{}, 1), fd: -1}
	l.free <- struct{}{}
	return l
}

var _ net.Listener = (*SerialListener)(nil)

// Accept waits for the previous connection to close and for the host side
// to be connected.
func (l *SerialListener) Accept() (net.Conn, error) {
	select {
	case <-l.free:
	case <-l.closed:
		return nil, net.ErrClosed
	}
	for {
		select {
		case <-l.closed:
			l.free <- struct{}{}
			return nil, net.ErrClosed
		default:
		}
		ok, err := l.hostConnected()
		if err != nil {
			l.free <- struct{}{}
			return nil, err
		}
		if ok {
			return &serialConn{l: l, port: l.port, addr: serialAddr(l.path)}, nil
		}
		select {
		case <-l.closed:
		case <-time.After(hostPollInterval):
		}
	}
}

// hostConnected opens the port on first use and reports whether the host
// side is connected (the port polls as hung up while it is not).
func (l *SerialListener) hostConnected() (bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	select {
	case <-l.closed:
		return false, net.ErrClosed
	default:
	}
	if l.port == nil {
		fd, err := unix.Open(l.path, unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
		if errors.Is(err, unix.EBUSY) {
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("opening agent port %s: %w", l.path, err)
		}
		l.fd = fd
		l.port = newFramer(os.NewFile(uintptr(fd), l.path))
	}
	for {
		fds := []unix.PollFd{{Fd: int32(l.fd), Events: unix.POLLIN}}
		_, err := unix.Poll(fds, int(hostPollInterval/time.Millisecond))
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return false, fmt.Errorf("polling agent port %s: %w", l.path, err)
		}
		connected := fds[0].Revents&unix.POLLHUP == 0
		l.active = connected
		return connected, nil
	}
}

// Close stops Accept. The port is closed once no connection uses it: a
// connection still open (a reply being written, as ttrpc's graceful
// Shutdown does) keeps working until it is closed.
func (l *SerialListener) Close() error {
	l.once.Do(func() {
		close(l.closed)
		l.mu.Lock()
		defer l.mu.Unlock()
		if !l.active {
			l.closePort()
		}
	})
	return nil
}

// closePort closes the port; the caller holds mu.
func (l *SerialListener) closePort() {
	if l.port != nil {
		_ = l.port.f.Close()
		l.port = nil
	}
}

// release ends the active connection.
func (l *SerialListener) release() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.active = false
	select {
	case <-l.closed:
		l.closePort()
	default:
	}
	l.free <- struct{}{}
}

// Addr names the port.
func (l *SerialListener) Addr() net.Addr { return serialAddr(l.path) }

type serialAddr string

func (a serialAddr) Network() string { return Serial }
func (a serialAddr) String() string  { return string(a) }

// serialConn is one host connection on the port.
type serialConn struct {
	l    *SerialListener
	port *framer
	addr serialAddr
	mu   sync.Mutex
	done bool
}

func (c *serialConn) ended() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.done
}

func (c *serialConn) Read(p []byte) (int, error) {
	if c.ended() {
		return 0, net.ErrClosed
	}
	return c.port.Read(p)
}

// Write sends to the host unless this connection has ended: a reply to a
// client that is gone must not reach its successor.
func (c *serialConn) Write(p []byte) (int, error) {
	if c.ended() {
		return 0, net.ErrClosed
	}
	return c.port.f.Write(p)
}

func (c *serialConn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done {
		return net.ErrClosed
	}
	c.done = true
	c.l.release()
	return nil
}

func (c *serialConn) LocalAddr() net.Addr                { return c.addr }
func (c *serialConn) RemoteAddr() net.Addr               { return serialAddr("host") }
func (c *serialConn) SetDeadline(t time.Time) error      { return nil }
func (c *serialConn) SetReadDeadline(t time.Time) error  { return nil }
func (c *serialConn) SetWriteDeadline(t time.Time) error { return nil }
