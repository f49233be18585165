package transport

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

// chunkReader returns its bytes in reads of at most size bytes.
type chunkReader struct {
	r    io.Reader
	size int
}

func (c chunkReader) Read(p []byte) (int, error) { return c.r.Read(p[:min(len(p), c.size)]) }

// FuzzFramer feeds the framer whatever the host writes to the port, in
// reads of any size: it never panics or spins, and the connections it
// hands out, joined, are a prefix of what the host sent, in order (only an
// incomplete frame at the end of the stream is dropped).
func FuzzFramer(f *testing.F) {
	two := append(frame(1, frameRequest, "check"), frame(3, frameRequest, "details")...)
	f.Add(append(append([]byte{}, two...), frame(1, frameRequest, "new client")...), uint8(7))
	f.Add(append(frame(5, frameRequest, "x"), frame(5, frameRequest, "same stream")...), uint8(1))
	f.Add(append(frame(1, 0x2, "response"), frame(3, 0x3, "data")...), uint8(3))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0, 0, 0, 1, 1, 0, 'a'}, uint8(64))
	f.Add(frame(1, frameRequest, "")[:9], uint8(2))
	f.Fuzz(func(t *testing.T, stream []byte, chunk uint8) {
		fr := &framer{rd: chunkReader{bytes.NewReader(stream), int(chunk%64) + 1}, buf: make([]byte, 64)}
		var got []byte
		p := make([]byte, 13)
		for reads := 0; ; reads++ {
			if reads > 4*len(stream)+16 {
				t.Fatalf("%d reads of a %d-byte stream: the framer spins", reads, len(stream))
			}
			n, err := fr.Read(p)
			got = append(got, p[:n]...)
			if errors.Is(err, io.EOF) && n == 0 && len(fr.pending) == 0 && fr.remaining == 0 {
				// Either the stream ended or a new client begins; an
				// exhausted reader and nothing buffered means the former.
				if m, _ := fr.rd.Read(make([]byte, 1)); m == 0 {
					break
				}
				t.Fatalf("framer ended a connection with nothing buffered before the stream ended")
			}
			if err != nil && !errors.Is(err, io.EOF) {
				t.Fatalf("Read: %v", err)
			}
		}
		if !bytes.HasPrefix(stream, got) {
			t.Fatalf("connections carried %q, not a prefix of the stream %q", got, stream)
		}
	})
}
