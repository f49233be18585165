package hypervisor

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"
)

// Console bounds the guest console log a driver writes in StateDir and
// hands its lines to the caller. The console carries the guest kernel's
// messages and the agent's log for as long as the VM runs, so unbounded it
// would fill /run (a tmpfs in memory) on a long-lived pod.
type Console struct {
	// MaxBytes caps each console log file; when a write would pass it, the
	// file becomes <name>.1 (older ones shift up) and a new one starts.
	// 0: DefaultConsoleMaxBytes.
	MaxBytes int64
	// Files is how many files are kept, the live one included (1: the log
	// is truncated when full). 0: DefaultConsoleFiles.
	Files int
	// Line, when set, is called with each console line (no newline; a line
	// longer than MaxConsoleLine is cut into pieces), in order, from one
	// goroutine, while the VM runs.
	Line func(line string)
}

const (
	// DefaultConsoleMaxBytes and DefaultConsoleFiles: 1 MiB x 2 files.
	DefaultConsoleMaxBytes = 1 << 20
	DefaultConsoleFiles    = 2
	// MaxConsoleLine bounds a line given to Console.Line.
	MaxConsoleLine = 4096
)

// RotatingFile is an io.WriteCloser over path that keeps at most files
// files of at most maxBytes each: path, path.1, ... path.<files-1>.
type RotatingFile struct {
	mu       sync.Mutex
	path     string
	maxBytes int64
	files    int
	f        *os.File
	size     int64
}

// NewRotatingFile creates (truncates) path. maxBytes and files of 0 take the
// Console defaults.
func NewRotatingFile(path string, maxBytes int64, files int) (*RotatingFile, error) {
	if maxBytes <= 0 {
		maxBytes = DefaultConsoleMaxBytes
	}
	if files <= 0 {
		files = DefaultConsoleFiles
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("creating console log: %w", err)
	}
	return &RotatingFile{path: path, maxBytes: maxBytes, files: files, f: f}, nil
}

// Write appends p, rotating first whenever the live file would pass
// maxBytes; a write larger than a whole file is split across files (only
// its tail survives).
func (r *RotatingFile) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.f == nil {
		return 0, os.ErrClosed
	}
	written := 0
	for len(p) > 0 {
		room := r.maxBytes - r.size
		if room <= 0 {
			if err := r.rotate(); err != nil {
				return written, err
			}
			room = r.maxBytes
		}
		chunk := p
		if int64(len(chunk)) > room {
			chunk = chunk[:room]
		}
		n, err := r.f.Write(chunk)
		written += n
		r.size += int64(n)
		if err != nil {
			return written, err
		}
		p = p[n:]
	}
	return written, nil
}

// rotate shifts path.N-1 -> path.N ... path -> path.1 and starts path anew.
func (r *RotatingFile) rotate() error {
	if err := r.f.Close(); err != nil {
		return fmt.Errorf("rotating console log: %w", err)
	}
	r.f = nil
	if r.files > 1 {
		for i := r.files - 1; i >= 1; i-- {
			from := r.path
			if i > 1 {
				from = r.path + "." + strconv.Itoa(i-1)
			}
			if err := os.Rename(from, r.path+"."+strconv.Itoa(i)); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("rotating console log: %w", err)
			}
		}
	}
	f, err := os.OpenFile(r.path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("rotating console log: %w", err)
	}
	r.f, r.size = f, 0
	return nil
}

// Close closes the live file.
func (r *RotatingFile) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.f == nil {
		return nil
	}
	err := r.f.Close()
	r.f = nil
	return err
}

// RotatedFiles are the names a RotatingFile at path may have written,
// newest first, for removal.
func RotatedFiles(path string, files int) []string {
	if files <= 0 {
		files = DefaultConsoleFiles
	}
	out := []string{path}
	for i := 1; i < files; i++ {
		out = append(out, path+"."+strconv.Itoa(i))
	}
	return out
}

// ConsoleTail is the last max bytes a RotatingFile at path wrote, from
// path.1 when path alone is shorter; "" when there are none.
func ConsoleTail(path string, max int64) string {
	cur := readTail(path, max)
	if int64(len(cur)) < max {
		cur = append(readTail(path+".1", max-int64(len(cur))), cur...)
	}
	return string(cur)
}

func readTail(path string, max int64) []byte {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() > max {
		if _, err := f.Seek(-max, io.SeekEnd); err != nil {
			return nil
		}
	}
	b, _ := io.ReadAll(io.LimitReader(f, max))
	return b
}

// CopyConsole copies the guest console from r (until EOF) into w and,
// line by line, to line (when not nil). It returns when r ends.
func CopyConsole(r io.Reader, w io.Writer, line func(string)) error {
	var pending []byte
	buf := make([]byte, 32*1024)
	var werr error
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if werr == nil {
				_, werr = w.Write(buf[:n])
			}
			if line != nil {
				pending = append(pending, buf[:n]...)
				for {
					i := bytes.IndexByte(pending, '\n')
					if i < 0 {
						break
					}
					emitLines(pending[:i], line)
					pending = pending[i+1:]
				}
				if len(pending) >= MaxConsoleLine {
					emitLines(pending, line)
					pending = nil
				}
				pending = append([]byte(nil), pending...)
			}
		}
		if err != nil {
			if line != nil && len(pending) > 0 {
				emitLines(pending, line)
			}
			if errors.Is(err, io.EOF) {
				return werr
			}
			return errors.Join(err, werr)
		}
	}
}

// emitLines gives b (one line, without its newline) to line in pieces of at
// most MaxConsoleLine, without a trailing carriage return.
func emitLines(b []byte, line func(string)) {
	b = bytes.TrimRight(b, "\r")
	for len(b) > MaxConsoleLine {
		line(string(b[:MaxConsoleLine]))
		b = b[MaxConsoleLine:]
	}
	if len(b) > 0 {
		line(string(b))
	}
}

// deathMarks are what a guest console line says when the guest is dying:
// the agent's fatal error, a Go runtime crash, the kernel's panic or oops.
var deathMarks = []string{
	`msg="fatal: powering off"`,
	"fatal error:", "panic:", "[signal ", "unexpected fault address",
	"Kernel panic", "BUG:", "Oops",
}

// DeathScanBytes is how much of a console's end DeathLines is given: a Go
// crash's first line comes before a stack of every goroutine.
const DeathScanBytes = 64 << 10

// maxDeathLine bounds each line DeathLines returns.
const maxDeathLine = 240

// DeathLines is the lines of guest console text that say why the guest
// died, in order, at most max, trimmed (and cut at 240 bytes); nil when it
// holds none (a cut falls between characters). A VM that exits unasked is reported with them, so the reason
// reaches the pod's user and not only the console file.
func DeathLines(console string, max int) []string {
	var out []string
	for l := range strings.SplitSeq(console, "\n") {
		for _, m := range deathMarks {
			if !strings.Contains(l, m) {
				continue
			}
			l = strings.TrimSpace(l)
			if len(l) > maxDeathLine {
				n := maxDeathLine
				for n > 0 && !utf8.RuneStart(l[n]) {
					n-- // not in the middle of a character
				}
				l = l[:n] + "..."
			}
			out = append(out, l)
			break
		}
		if len(out) == max {
			break
		}
	}
	return out
}
