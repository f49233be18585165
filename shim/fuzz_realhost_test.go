package shim

import (
	"bytes"
	"io"
	"path"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"

	"github.com/veil-runtime/veil/hypervisor"
)

// FuzzGuestConsole feeds what a (possibly hostile) guest writes to its
// console through the copier and the shim's log forwarding: no panic, the
// log gets every byte, each forwarded line is at most MaxConsoleLine bytes
// and holds no newline.
func FuzzGuestConsole(f *testing.F) {
	f.Add([]byte("time=t level=INFO msg=starting c=veil-agent\n[ 0.1] kernel\n"))
	f.Add([]byte("level=ERROR-8 c=veil-agent\r\n\x00\xff"))
	f.Add([]byte(strings.Repeat("y", hypervisor.MaxConsoleLine+1)))
	l := logrus.New()
	l.SetOutput(io.Discard)
	l.SetLevel(logrus.DebugLevel)
	forward := guestLogLine(logrus.NewEntry(l))
	f.Fuzz(func(t *testing.T, in []byte) {
		var log bytes.Buffer
		err := hypervisor.CopyConsole(bytes.NewReader(in), &log, func(line string) {
			if len(line) > hypervisor.MaxConsoleLine || strings.Contains(line, "\n") {
				t.Fatalf("forwarded line of %d bytes with newline %v", len(line), strings.Contains(line, "\n"))
			}
			forward(line)
		})
		if err != nil || !bytes.Equal(log.Bytes(), in) {
			t.Fatalf("console log differs from the input (err %v)", err)
		}
	})
}

// FuzzParseSystemdCgroup: whatever cgroups path containerd passes, an
// accepted one names a .scope unit inside its slice's expanded path, with
// no way out of it.
func FuzzParseSystemdCgroup(f *testing.F) {
	f.Add("kubepods-burstable-pod1.slice:cri-containerd:sb")
	f.Add(":veil:sb")
	f.Add("-.slice::x")
	f.Add("a--b.slice:p:n")
	f.Add("kubepods.slice:..:..")
	f.Fuzz(func(t *testing.T, in string) {
		sc, ok, err := parseSystemdCgroup(in)
		if !ok || err != nil {
			return
		}
		slice, serr := expandSlice(sc.Slice)
		p := sc.Path()
		if serr != nil || !strings.HasSuffix(sc.Unit, ".scope") || strings.Contains(sc.Unit, "/") ||
			path.Clean(p) != p || path.Dir(p) != slice || strings.Contains(p, "/../") {
			t.Fatalf("%q accepted as %+v (path %s, slice path %s, %v)", in, sc, p, slice, serr)
		}
	})
}
