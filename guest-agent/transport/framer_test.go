package transport

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"
)

func frame(stream uint32, typ byte, payload string) []byte {
	b := make([]byte, frameHeader, frameHeader+len(payload))
	binary.BigEndian.PutUint32(b[0:4], uint32(len(payload)))
	binary.BigEndian.PutUint32(b[4:8], stream)
	b[8] = typ
	return append(b, payload...)
}

// readSession reads one connection's bytes until io.EOF, in small reads.
func readSession(t *testing.T, fr *framer) []byte {
	t.Helper()
	var out []byte
	p := make([]byte, 7)
	for {
		n, err := fr.Read(p)
		out = append(out, p[:n]...)
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

// oneByteReader returns one byte per Read, as a slow port might.
type oneByteReader struct{ r io.Reader }

func (o oneByteReader) Read(p []byte) (int, error) { return o.r.Read(p[:1]) }

func TestFramerSplitsClientsOnStreamIDReset(t *testing.T) {
	first := append(frame(1, frameRequest, "check"), frame(3, frameRequest, "details")...)
	first = append(first, frame(3, 0x3, "data on stream 3")...)
	second := append(frame(1, frameRequest, "new client"), frame(3, frameRequest, "more")...)
	stream := append(append([]byte{}, first...), second...)

	for name, rd := range map[string]io.Reader{
		"whole":    bytes.NewReader(stream),
		"one byte": oneByteReader{bytes.NewReader(stream)},
	} {
		fr := &framer{rd: rd, buf: make([]byte, 64)}
		if got := readSession(t, fr); !bytes.Equal(got, first) {
			t.Fatalf("%s: first connection got %q, want the first client's frames", name, got)
		}
		if got := readSession(t, fr); !bytes.Equal(got, second) {
			t.Fatalf("%s: second connection got %q, want the second client's frames", name, got)
		}
	}
}

func TestFramerDisconnectResetsStreams(t *testing.T) {
	// EOF from the port (host gone), then the next client starts at 1 again.
	r := &scripted{chunks: [][]byte{frame(1, frameRequest, "a"), frame(3, frameRequest, "b"), nil, frame(1, frameRequest, "c")}}
	fr := &framer{rd: r, buf: make([]byte, 64)}
	if got := readSession(t, fr); len(got) != 2*frameHeader+2 {
		t.Fatalf("first connection got %d bytes", len(got))
	}
	if got := readSession(t, fr); !bytes.Equal(got, frame(1, frameRequest, "c")) {
		t.Fatalf("after disconnect got %q", got)
	}
}

// scripted returns its chunks in turn; a nil chunk is an EOF.
type scripted struct{ chunks [][]byte }

func (s *scripted) Read(p []byte) (int, error) {
	if len(s.chunks) == 0 {
		return 0, io.EOF
	}
	c := s.chunks[0]
	s.chunks = s.chunks[1:]
	if c == nil {
		return 0, io.EOF
	}
	return copy(p, c), nil
}
