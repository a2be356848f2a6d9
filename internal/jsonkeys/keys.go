package jsonkeys

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Error is a repeated key: Path is where its object is ("" at the top,
// "modules.web", "needs[2]"), Pos its line and column.
type Error struct {
	Path, Key, Pos string
}

func (e *Error) Error() string {
	if e.Path == "" {
		return fmt.Sprintf("duplicate field %q (%s)", e.Key, e.Pos)
	}
	return fmt.Sprintf("%s: duplicate field %q (%s)", e.Path, e.Key, e.Pos)
}

// errSyntax answers malformed input, which callers have normally refused
// already while decoding it, with a better message.
var errSyntax = errors.New("jsonkeys: malformed JSON")

// maxDepth is encoding/json's nesting limit: deeper input is refused
// rather than recursed into.
const maxDepth = 10000

// Unique returns an *Error for the first object in data's first JSON value
// that repeats a key (keys compare after unescaping, as encoding/json
// compares them). Decode data first: on malformed input Unique only says
// it is malformed.
//
// It scans the bytes itself rather than through json.Decoder.Token, which
// allocates for every token: link frames go through it.
func Unique(data []byte) error {
	s := scanner{data: data}
	return s.value(0)
}

// LineCol renders a byte offset as a 1-based line and column (in runes).
func LineCol(data []byte, off int) string {
	off = min(max(off, 0), len(data))
	before := data[:off]
	line := bytes.Count(before, []byte{'\n'}) + 1
	col := utf8.RuneCount(before[bytes.LastIndexByte(before, '\n')+1:]) + 1
	return fmt.Sprintf("line %d, column %d", line, col)
}

// scanner walks data at i; path holds the keys and indices down to the
// current value, turned into text only for an error.
type scanner struct {
	data []byte
	i    int
	path []step
	// keys holds the keys of the objects being read, innermost last, so
	// that short objects (most) need no set of their own.
	keys [][]byte
}

// step is a key (in an object) or an index (in an array).
type step struct {
	key   []byte
	index int
}

func (s *scanner) space() {
	for s.i < len(s.data) {
		switch s.data[s.i] {
		case ' ', '\t', '\r', '\n':
			s.i++
		default:
			return
		}
	}
}

// peek returns the next byte after white space, 0 at the end.
func (s *scanner) peek() byte {
	s.space()
	if s.i == len(s.data) {
		return 0
	}
	return s.data[s.i]
}

func (s *scanner) value(depth int) error {
	if depth > maxDepth {
		return errSyntax
	}
	switch s.peek() {
	case '{':
		return s.object(depth)
	case '[':
		return s.array(depth)
	case '"':
		_, _, err := s.str()
		return err
	case 0:
		return errSyntax
	}
	// A number, true, false or null: up to the next delimiter.
	start := s.i
	for s.i < len(s.data) && !delimiter(s.data[s.i]) {
		s.i++
	}
	if s.i == start {
		return errSyntax
	}
	return nil
}

func delimiter(c byte) bool {
	switch c {
	case ',', ']', '}', ' ', '\t', '\r', '\n':
		return true
	}
	return false
}

// str reads a string at s.i and returns its raw content and whether it
// has escapes.
func (s *scanner) str() ([]byte, bool, error) {
	start, escaped := s.i+1, false
	for s.i++; s.i < len(s.data); s.i++ {
		switch s.data[s.i] {
		case '\\':
			escaped = true
			s.i++
		case '"':
			s.i++
			return s.data[start : s.i-1], escaped, nil
		}
	}
	return nil, false, errSyntax
}

func (s *scanner) array(depth int) error {
	s.i++ // '['
	if s.peek() == ']' {
		s.i++
		return nil
	}
	for n := 0; ; n++ {
		s.path = append(s.path, step{index: n})
		if err := s.value(depth + 1); err != nil {
			return err
		}
		s.path = s.path[:len(s.path)-1]
		switch s.peek() {
		case ',':
			s.i++
		case ']':
			s.i++
			return nil
		default:
			return errSyntax
		}
	}
}

func (s *scanner) object(depth int) error {
	s.i++ // '{'
	if s.peek() == '}' {
		s.i++
		return nil
	}
	seen := keySet{s: s, base: len(s.keys)}
	defer func() { s.keys = s.keys[:seen.base] }()
	for {
		if s.peek() != '"' {
			return errSyntax
		}
		off := s.i
		raw, escaped, err := s.str()
		if err != nil {
			return err
		}
		key := raw
		if escaped {
			var k string
			if json.Unmarshal(s.data[off:s.i], &k) != nil {
				return errSyntax
			}
			key = []byte(k)
		}
		if !seen.add(key) {
			return &Error{Path: s.pathString(), Key: string(key), Pos: LineCol(s.data, off)}
		}
		if s.peek() != ':' {
			return errSyntax
		}
		s.i++
		s.path = append(s.path, step{key: key})
		if err := s.value(depth + 1); err != nil {
			return err
		}
		s.path = s.path[:len(s.path)-1]
		switch s.peek() {
		case ',':
			s.i++
		case '}':
			s.i++
			return nil
		default:
			return errSyntax
		}
	}
}

// keySet is an object's keys: s.keys from base while short, then a map.
type keySet struct {
	s    *scanner
	base int
	m    map[string]struct{}
}

// add reports whether key was new.
func (k *keySet) add(key []byte) bool {
	if k.m != nil {
		if _, dup := k.m[string(key)]; dup {
			return false
		}
		k.m[string(key)] = struct{}{}
		return true
	}
	list := k.s.keys[k.base:]
	for _, x := range list {
		if bytes.Equal(x, key) {
			return false
		}
	}
	if len(list) < 16 {
		k.s.keys = append(k.s.keys, key)
		return true
	}
	k.m = make(map[string]struct{}, 2*len(list))
	for _, x := range list {
		k.m[string(x)] = struct{}{}
	}
	k.m[string(key)] = struct{}{}
	k.s.keys = k.s.keys[:k.base]
	return true
}

func (s *scanner) pathString() string {
	var b strings.Builder
	for _, p := range s.path {
		if p.key == nil {
			b.WriteString("[" + strconv.Itoa(p.index) + "]")
			continue
		}
		if b.Len() > 0 {
			b.WriteByte('.')
		}
		b.Write(p.key)
	}
	return b.String()
}
