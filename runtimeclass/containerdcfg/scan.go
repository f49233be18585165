package containerdcfg

import (
	"fmt"
	"strings"
)

// A minimal TOML scanner for the root table of a containerd config: it finds
// the top-level key/value pairs (with their byte ranges) and the elements of an
// array value, so an edit can touch a few bytes and leave every comment,
// blank line and quirk of formatting as it was. It does not interpret values;
// every edit is checked afterwards by decoding old and new documents with a
// real TOML parser (see AddImport).

// keyValue is a top-level key/value pair.
type keyValue struct {
	key        []string // dotted key parts, unquoted
	valueStart int      // first byte of the value
	valueEnd   int      // one past the value's last byte
	lineEnd    int      // offset of the line break ending the pair's line, or len(src)
	elems      []span   // array elements, when the value is an array
	isArray    bool
}

type span struct{ start, end int }

type scanner struct {
	src []byte
	pos int
}

func (s *scanner) errorf(format string, args ...any) error {
	line := 1 + strings.Count(string(s.src[:min(s.pos, len(s.src))]), "\n")
	return fmt.Errorf("line %d: %s", line, fmt.Sprintf(format, args...))
}

// rootPairs returns the key/value pairs before the first table header.
func rootPairs(src []byte) ([]keyValue, error) {
	s := &scanner{src: src}
	var out []keyValue
	for {
		s.skipSpaceAndComments(true)
		if s.pos >= len(src) || src[s.pos] == '[' {
			return out, nil
		}
		kv, err := s.pair()
		if err != nil {
			return nil, err
		}
		out = append(out, kv)
	}
}

// skipSpaceAndComments skips blanks and comments; newlines too when nl.
func (s *scanner) skipSpaceAndComments(nl bool) {
	for s.pos < len(s.src) {
		switch c := s.src[s.pos]; {
		case c == ' ' || c == '\t':
			s.pos++
		case nl && (c == '\n' || c == '\r'):
			s.pos++
		case c == '#':
			for s.pos < len(s.src) && s.src[s.pos] != '\n' && s.src[s.pos] != '\r' {
				s.pos++
			}
		default:
			return
		}
	}
}

func (s *scanner) pair() (keyValue, error) {
	var kv keyValue
	for {
		s.skipSpaceAndComments(false)
		part, err := s.keyPart()
		if err != nil {
			return kv, err
		}
		kv.key = append(kv.key, part)
		s.skipSpaceAndComments(false)
		if s.pos < len(s.src) && s.src[s.pos] == '.' {
			s.pos++
			continue
		}
		break
	}
	if s.pos >= len(s.src) || s.src[s.pos] != '=' {
		return kv, s.errorf("expected '=' after key %s", strings.Join(kv.key, "."))
	}
	s.pos++
	s.skipSpaceAndComments(false)
	kv.valueStart = s.pos
	if s.pos < len(s.src) && s.src[s.pos] == '[' {
		elems, err := s.array()
		if err != nil {
			return kv, err
		}
		kv.isArray, kv.elems = true, elems
	} else if err := s.value(); err != nil {
		return kv, err
	}
	kv.valueEnd = s.pos
	s.skipSpaceAndComments(false)
	if s.pos < len(s.src) && s.src[s.pos] != '\n' && s.src[s.pos] != '\r' {
		return kv, s.errorf("unexpected %q after the value of %s", s.src[s.pos], strings.Join(kv.key, "."))
	}
	kv.lineEnd = s.pos
	return kv, nil
}

func isBare(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
}

func (s *scanner) keyPart() (string, error) {
	if s.pos >= len(s.src) {
		return "", s.errorf("unexpected end of file in a key")
	}
	switch s.src[s.pos] {
	case '"', '\'':
		start := s.pos
		if err := s.str(); err != nil {
			return "", err
		}
		return string(s.src[start+1 : s.pos-1]), nil
	}
	start := s.pos
	for s.pos < len(s.src) && isBare(s.src[s.pos]) {
		s.pos++
	}
	if start == s.pos {
		return "", s.errorf("unexpected %q where a key should be", s.src[s.pos])
	}
	return string(s.src[start:s.pos]), nil
}

// str consumes a basic, literal or multi-line string starting at s.pos.
func (s *scanner) str() error {
	q := s.src[s.pos]
	triple := strings.Repeat(string(q), 3)
	if strings.HasPrefix(string(s.src[s.pos:]), triple) {
		s.pos += 3
		for s.pos < len(s.src) {
			if q == '"' && s.src[s.pos] == '\\' {
				s.pos += 2
				continue
			}
			if strings.HasPrefix(string(s.src[s.pos:]), triple) {
				s.pos += 3
				// Up to two more quotes may belong to the string.
				for i := 0; i < 2 && s.pos < len(s.src) && s.src[s.pos] == q; i++ {
					s.pos++
				}
				return nil
			}
			s.pos++
		}
		return s.errorf("unterminated multi-line string")
	}
	s.pos++
	for s.pos < len(s.src) {
		c := s.src[s.pos]
		switch {
		case q == '"' && c == '\\':
			s.pos += 2
			continue
		case c == q:
			s.pos++
			return nil
		case c == '\n':
			return s.errorf("unterminated string")
		}
		s.pos++
	}
	return s.errorf("unterminated string")
}

// array consumes an array and returns the spans of its elements.
func (s *scanner) array() ([]span, error) {
	s.pos++ // [
	var elems []span
	for {
		s.skipSpaceAndComments(true)
		if s.pos >= len(s.src) {
			return nil, s.errorf("unterminated array")
		}
		if s.src[s.pos] == ']' {
			s.pos++
			return elems, nil
		}
		start := s.pos
		var err error
		if s.src[s.pos] == '[' {
			_, err = s.array()
		} else {
			err = s.value()
		}
		if err != nil {
			return nil, err
		}
		elems = append(elems, span{start, s.pos})
		s.skipSpaceAndComments(true)
		if s.pos < len(s.src) && s.src[s.pos] == ',' {
			s.pos++
			continue
		}
		s.skipSpaceAndComments(true)
		if s.pos >= len(s.src) || s.src[s.pos] != ']' {
			return nil, s.errorf("expected ',' or ']' in an array")
		}
	}
}

// value consumes a scalar, string or inline table.
func (s *scanner) value() error {
	if s.pos >= len(s.src) {
		return s.errorf("missing value")
	}
	switch s.src[s.pos] {
	case '"', '\'':
		return s.str()
	case '[':
		_, err := s.array()
		return err
	case '{':
		s.pos++
		depth := 1
		for s.pos < len(s.src) && depth > 0 {
			switch s.src[s.pos] {
			case '"', '\'':
				if err := s.str(); err != nil {
					return err
				}
				continue
			case '{':
				depth++
			case '}':
				depth--
			}
			s.pos++
		}
		if depth > 0 {
			return s.errorf("unterminated inline table")
		}
		return nil
	}
	start := s.pos
	for s.pos < len(s.src) {
		c := s.src[s.pos]
		if c == ',' || c == ']' || c == '}' || c == '#' || c == '\n' || c == '\r' {
			break
		}
		// Dates may contain one space between date and time; anything
		// else ends at a blank.
		if (c == ' ' || c == '\t') && !(c == ' ' && s.pos+1 < len(s.src) && s.src[s.pos+1] >= '0' && s.src[s.pos+1] <= '9' && s.pos-start == 10) {
			break
		}
		s.pos++
	}
	if start == s.pos {
		return s.errorf("missing value")
	}
	return nil
}
