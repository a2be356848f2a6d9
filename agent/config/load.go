package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Load reads the config file at path. When the file does not exist it
// writes Default() there (atomically, never replacing a file that appears
// meanwhile) and returns it with created set. An existing file is parsed
// strictly and validated; it is never modified. Errors start with path and
// name the field, and the line and column where the file says where.
func Load(path string) (cfg Config, created bool, err error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		created, err = writeDefault(path)
		if err != nil {
			return Config{}, false, fmt.Errorf("%s: writing the default config: %w", path, err)
		}
		if created {
			return Default(), true, nil
		}
		// Another process created the file first: use theirs.
		data, err = os.ReadFile(path)
	}
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return Config{}, false, fmt.Errorf("%s: cannot read: %w", path, err)
	}
	cfg, err = Parse(path, data)
	return cfg, false, err
}

// DefaultJSON is the content Load writes for a missing file.
func DefaultJSON() []byte {
	b, err := json.MarshalIndent(Default(), "", "  ")
	if err != nil {
		panic(err) // Default() always marshals
	}
	return append(b, '\n')
}

// writeDefault creates path with DefaultJSON. The content goes to a temp
// file first and is hard-linked into place, so readers never see a partial
// file and an existing file is never clobbered. It reports false, nil when
// path appeared in the meantime.
func writeDefault(path string) (bool, error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+".tmp*")
	if err != nil {
		return false, err
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if _, err := f.Write(DefaultJSON()); err != nil {
		f.Close()
		return false, err
	}
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		return false, err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return false, err
	}
	if err := f.Close(); err != nil {
		return false, err
	}
	if err := os.Link(tmp, path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return false, nil
		}
		return false, err
	}
	return true, nil
}

// Parse strictly parses and validates config file content; name prefixes
// every error. Unknown or duplicate fields, fields spelled in another case,
// null values, trailing data and values of the wrong type are refused.
func Parse(name string, data []byte) (Config, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return Config{}, fmt.Errorf("%s: empty file (delete it to have the default written)", name)
	}
	// The whole-buffer check gives syntax errors (including trailing data)
	// an offset into the file.
	var raw json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			off := int(se.Offset) - 1
			if se.Offset >= int64(len(data)) {
				off = len(data)
			}
			return Config{}, fmt.Errorf("%s: %s: %w", name, lineCol(data, off), err)
		}
		return Config{}, fmt.Errorf("%s: %w", name, err)
	}
	w := &walker{data: data, dec: json.NewDecoder(bytes.NewReader(data))}
	w.dec.UseNumber()
	if err := w.walk(reflect.TypeFor[Config](), ""); err != nil {
		return Config{}, fmt.Errorf("%s: %w", name, err)
	}
	var cfg Config
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&cfg); err != nil {
		return Config{}, fmt.Errorf("%s: %w", name, err)
	}
	if err := cfg.Validate(); err != nil {
		return Config{}, fmt.Errorf("%s: %w", name, err)
	}
	return cfg, nil
}

// lineCol renders a byte offset as a 1-based line and column (in runes).
func lineCol(data []byte, off int) string {
	off = min(max(off, 0), len(data))
	before := data[:off]
	line := bytes.Count(before, []byte{'\n'}) + 1
	col := utf8.RuneCount(before[bytes.LastIndexByte(before, '\n')+1:]) + 1
	return fmt.Sprintf("line %d, column %d", line, col)
}

// walker checks the token stream of an already syntax-checked document
// against the Go types it will be decoded into. encoding/json alone cannot
// say where an unknown field is, accepts keys in any case and lets a later
// duplicate key win silently; the walker reports all three with a field
// path and a position.
type walker struct {
	data []byte
	dec  *json.Decoder
}

type fieldError struct {
	path, msg string
	pos       string
}

func (e *fieldError) Error() string {
	if e.path == "" {
		return fmt.Sprintf("%s (%s)", e.msg, e.pos)
	}
	return fmt.Sprintf("%s: %s (%s)", e.path, e.msg, e.pos)
}

func (w *walker) errAt(off int, path, format string, args ...any) error {
	return &fieldError{path: path, msg: fmt.Sprintf(format, args...), pos: lineCol(w.data, off)}
}

// next reads a token and returns where it starts.
func (w *walker) next() (json.Token, int, error) {
	off := int(w.dec.InputOffset())
	for off < len(w.data) {
		switch w.data[off] {
		case ' ', '\t', '\r', '\n', ',', ':':
			off++
			continue
		}
		break
	}
	tok, err := w.dec.Token()
	if err != nil {
		return nil, off, fmt.Errorf("%s: %w", lineCol(w.data, off), err)
	}
	return tok, off, nil
}

var (
	durationType = reflect.TypeFor[Duration]()
	byteSizeType = reflect.TypeFor[ByteSize]()
)

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func (w *walker) walk(t reflect.Type, path string) error {
	tok, off, err := w.next()
	if err != nil {
		return err
	}
	if t == durationType {
		if _, err := durationFromToken(tok); err != nil {
			return w.errAt(off, path, "%v", err)
		}
		return nil
	}
	if t == byteSizeType {
		if _, err := byteSizeFromToken(tok); err != nil {
			return w.errAt(off, path, "%v", err)
		}
		return nil
	}
	switch t.Kind() {
	case reflect.String:
		if _, ok := tok.(string); !ok {
			return w.errAt(off, path, "want a string, got %s", describe(tok))
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n, ok := tok.(json.Number)
		if !ok {
			return w.errAt(off, path, "want an integer, got %s", describe(tok))
		}
		if _, err := strconv.ParseInt(string(n), 10, t.Bits()); err != nil {
			if isInteger(string(n)) {
				return w.errAt(off, path, "%s is out of range", n)
			}
			return w.errAt(off, path, "%s is not an integer", n)
		}
	case reflect.Uint16:
		n, ok := tok.(json.Number)
		if !ok {
			return w.errAt(off, path, "want a port number 1-65535, got %s", describe(tok))
		}
		if _, err := strconv.ParseUint(string(n), 10, 16); err != nil {
			if isInteger(string(n)) {
				return w.errAt(off, path, "%s is out of range 1-65535", n)
			}
			return w.errAt(off, path, "%s is not a port number (want an integer 1-65535)", n)
		}
	case reflect.Struct:
		return w.walkObject(tok, off, path, func(key string, keyOff int) (reflect.Type, error) {
			f, ok := fieldByTag(t, key)
			if !ok {
				return nil, w.errAt(keyOff, path, "unknown field %q", key)
			}
			return f, nil
		})
	case reflect.Map:
		return w.walkObject(tok, off, path, func(string, int) (reflect.Type, error) { return t.Elem(), nil })
	case reflect.Slice:
		if tok != json.Delim('[') {
			return w.errAt(off, path, "want an array, got %s", describe(tok))
		}
		for i := 0; w.dec.More(); i++ {
			if err := w.walk(t.Elem(), fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
		_, _, err := w.next() // ']'
		return err
	default:
		return w.errAt(off, path, "internal error: no rule for %s", t)
	}
	return nil
}

// walkObject walks an object whose value types come from elem, refusing
// duplicate keys.
func (w *walker) walkObject(tok json.Token, off int, path string, elem func(key string, keyOff int) (reflect.Type, error)) error {
	if tok != json.Delim('{') {
		return w.errAt(off, path, "want an object, got %s", describe(tok))
	}
	seen := map[string]bool{}
	for w.dec.More() {
		kt, keyOff, err := w.next()
		if err != nil {
			return err
		}
		key, _ := kt.(string)
		if seen[key] {
			return w.errAt(keyOff, path, "duplicate field %q", key)
		}
		seen[key] = true
		t, err := elem(key, keyOff)
		if err != nil {
			return err
		}
		if err := w.walk(t, join(path, key)); err != nil {
			return err
		}
	}
	_, _, err := w.next() // '}'
	return err
}

// fieldByTag finds the field whose JSON name is exactly key.
func fieldByTag(t reflect.Type, key string) (reflect.Type, bool) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == key && name != "" && name != "-" {
			return f.Type, true
		}
	}
	return nil, false
}

// describe names a JSON token's kind for error messages.
func describe(tok json.Token) string {
	switch v := tok.(type) {
	case nil:
		return "null"
	case bool:
		return "a boolean"
	case string:
		return "a string"
	case json.Number:
		return "the number " + string(v)
	case float64:
		return "a number"
	case json.Delim:
		if v == '{' {
			return "an object"
		}
		return "an array"
	}
	return fmt.Sprintf("%T", tok)
}
