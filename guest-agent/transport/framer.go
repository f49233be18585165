package transport

import (
	"encoding/binary"
	"io"
	"os"
)

// ttrpc framing: a 10-byte header (length, stream ID, type, flags; big
// endian) and length bytes of payload. A client numbers its streams 1, 3, 5...
const (
	frameHeader  = 10
	frameRequest = 0x1
)

// framer reads the host-to-guest byte stream of the port and ends a
// connection where a new client starts: at a request whose stream ID does
// not increase. The bytes of that request stay buffered for the next
// connection.
type framer struct {
	f  *os.File
	rd io.Reader

	pending    []byte
	remaining  int    // bytes of the current frame not yet returned
	lastStream uint32 // highest request stream ID of the current client
	buf        []byte
}

func newFramer(f *os.File) *framer {
	return &framer{f: f, rd: f, buf: make([]byte, 32<<10)}
}

// fill reads more bytes from the port.
func (fr *framer) fill() error {
	n, err := fr.rd.Read(fr.buf)
	fr.pending = append(fr.pending, fr.buf[:n]...)
	if n > 0 {
		return nil
	}
	if err == nil {
		err = io.ErrNoProgress
	}
	return err
}

// reset forgets the current client (it disconnected).
func (fr *framer) reset() {
	fr.pending, fr.remaining, fr.lastStream = nil, 0, 0
}

// Read returns bytes of the current client's stream; io.EOF when the host
// disconnected or a new client began.
func (fr *framer) Read(p []byte) (int, error) {
	if fr.remaining == 0 {
		for len(fr.pending) < frameHeader {
			if err := fr.fill(); err != nil {
				fr.reset()
				return 0, err
			}
		}
		length := binary.BigEndian.Uint32(fr.pending[0:4])
		stream := binary.BigEndian.Uint32(fr.pending[4:8])
		if fr.pending[8] == frameRequest {
			if fr.lastStream != 0 && stream <= fr.lastStream {
				fr.lastStream = 0
				return 0, io.EOF
			}
			fr.lastStream = stream
		}
		fr.remaining = frameHeader + int(length)
	}
	if len(fr.pending) == 0 {
		if err := fr.fill(); err != nil {
			fr.reset()
			return 0, err
		}
	}
	n := copy(p, fr.pending[:min(len(fr.pending), fr.remaining)])
	fr.pending = fr.pending[n:]
	fr.remaining -= n
	return n, nil
}
