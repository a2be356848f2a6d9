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

	"github.com/allex-go/allex/internal/jsonkeys"
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

// utf8BOM is skipped at the start of a file: Windows editors write one,
// RFC 8259 lets a parser ignore it, and encoding/json alone would refuse
// the file with a cryptic "invalid character 'ï'".
var utf8BOM = []byte{0xEF, 0xBB, 0xBF}

// maxProblems bounds the problems one error lists.
const maxProblems = 20

// Parse strictly parses and validates config file content; name prefixes
// every error. Unknown or duplicate fields, fields spelled in another case,
// null values, trailing data and values of the wrong type are refused.
// Keys left out take their defaults: those of Default() here, the others
// in WithDefaults. Every problem found is reported, one per line.
func Parse(name string, data []byte) (Config, error) {
	data = bytes.TrimPrefix(data, utf8BOM)
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
			return Config{}, fmt.Errorf("%s: %s: %w", name, jsonkeys.LineCol(data, off), err)
		}
		return Config{}, fmt.Errorf("%s: %w", name, err)
	}
	w := &walker{data: data, dec: json.NewDecoder(bytes.NewReader(data))}
	if err := jsonkeys.Unique(data); err != nil {
		w.errs = append(w.errs, err)
	}
	w.dec.UseNumber()
	if err := w.walk(reflect.TypeFor[Config](), ""); err != nil {
		w.errs = append(w.errs, err)
	}
	if len(w.errs) > 0 {
		return Config{}, problems(name, w.errs)
	}
	// Decoding into the defaults keeps them for keys left out: no
	// lanmanageraddress means the default LAN manager, a portrangestart
	// naming only tcp keeps the http and ws defaults.
	cfg := Default()
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&cfg); err != nil {
		return Config{}, fmt.Errorf("%s: %w", name, err)
	}
	errs := explicitZeros(data)
	if err := cfg.Validate(); err != nil {
		errs = append(errs, unjoin(err)...)
	}
	if len(errs) > 0 {
		return Config{}, problems(name, errs)
	}
	return cfg, nil
}

// explicitZeros refuses a 0 written for a key whose Go zero value means
// "the default": in the file, leaving the key out says that.
func explicitZeros(data []byte) []error {
	var set struct {
		LanManagerPort *int `json:"lanmanagerport"`
		PortRangeSize  *int `json:"portrangesize"`
	}
	_ = json.Unmarshal(data, &set) // the walker checked the types
	var errs []error
	if set.LanManagerPort != nil && *set.LanManagerPort == 0 {
		errs = append(errs, fmt.Errorf("lanmanagerport: 0 is out of range 1-65535 (leave the key out for %d)", DefaultLanManagerPort))
	}
	if set.PortRangeSize != nil && *set.PortRangeSize == 0 {
		errs = append(errs, fmt.Errorf("portrangesize: 0 is out of range 1-65535 (leave the key out for %d)", DefaultPortRangeSize))
	}
	return errs
}

// unjoin splits an errors.Join result into its errors.
func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// problems renders errs one per line, each starting with name, at most
// maxProblems of them.
func problems(name string, errs []error) error {
	var b strings.Builder
	for i, err := range errs {
		if i == maxProblems {
			fmt.Fprintf(&b, "\n%s: and %d more problems", name, len(errs)-i)
			break
		}
		if i > 0 {
			b.WriteByte('\n')
		}
		fmt.Fprintf(&b, "%s: %v", name, err)
	}
	return errors.New(b.String())
}

// walker checks the token stream of an already syntax-checked document
// against the Go types it will be decoded into. encoding/json alone cannot
// say where an unknown field is and accepts keys in any case; the walker
// reports both with a field path and a position (jsonkeys, run before it,
// the duplicate keys encoding/json lets win silently). It collects every such problem in errs and goes
// on with the next value; walk returns an error only when the token
// stream itself fails.
type walker struct {
	data []byte
	dec  *json.Decoder
	errs []error
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

// fail records a problem with the value at off.
func (w *walker) fail(off int, path, format string, args ...any) {
	w.errs = append(w.errs, &fieldError{path: path, msg: fmt.Sprintf(format, args...), pos: jsonkeys.LineCol(w.data, off)})
}

// mismatch records a value of the wrong kind and skips the rest of it.
func (w *walker) mismatch(tok json.Token, off int, path, format string, args ...any) error {
	w.fail(off, path, format, args...)
	return w.skip(tok)
}

// skip reads past the rest of a value whose first token was tok.
func (w *walker) skip(tok json.Token) error {
	for depth := 0; ; {
		switch tok {
		case json.Delim('{'), json.Delim('['):
			depth++
		case json.Delim('}'), json.Delim(']'):
			depth--
		}
		if depth == 0 {
			return nil
		}
		var err error
		if tok, _, err = w.next(); err != nil {
			return err
		}
	}
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
		return nil, off, fmt.Errorf("%s: %w", jsonkeys.LineCol(w.data, off), err)
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
			return w.mismatch(tok, off, path, "%v", err)
		}
		return nil
	}
	if t == byteSizeType {
		if _, err := byteSizeFromToken(tok); err != nil {
			return w.mismatch(tok, off, path, "%v", err)
		}
		return nil
	}
	switch t.Kind() {
	case reflect.String:
		if _, ok := tok.(string); !ok {
			return w.mismatch(tok, off, path, "want a string, got %s", describe(tok))
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n, ok := tok.(json.Number)
		if !ok {
			return w.mismatch(tok, off, path, "want an integer, got %s", describe(tok))
		}
		if _, err := strconv.ParseInt(string(n), 10, t.Bits()); err != nil {
			if isInteger(string(n)) {
				w.fail(off, path, "%s is out of range", n)
			} else {
				w.fail(off, path, "%s is not an integer", n)
			}
		}
	case reflect.Bool:
		if _, ok := tok.(bool); !ok {
			return w.mismatch(tok, off, path, "want true or false, got %s", describe(tok))
		}
	case reflect.Uint16:
		n, ok := tok.(json.Number)
		if !ok {
			return w.mismatch(tok, off, path, "want a port number 1-65535, got %s", describe(tok))
		}
		if _, err := strconv.ParseUint(string(n), 10, 16); err != nil {
			if isInteger(string(n)) {
				w.fail(off, path, "%s is out of range 1-65535", n)
			} else {
				w.fail(off, path, "%s is not a port number (want an integer 1-65535)", n)
			}
		}
	case reflect.Struct:
		return w.walkObject(tok, off, path, func(key string) reflect.Type {
			f, _ := fieldByTag(t, key)
			return f
		})
	case reflect.Map:
		return w.walkObject(tok, off, path, func(string) reflect.Type { return t.Elem() })
	case reflect.Slice:
		if tok != json.Delim('[') {
			return w.mismatch(tok, off, path, "want an array, got %s", describe(tok))
		}
		for i := 0; w.dec.More(); i++ {
			if err := w.walk(t.Elem(), fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
		_, _, err := w.next() // ']'
		return err
	default:
		return w.mismatch(tok, off, path, "internal error: no rule for %s", t)
	}
	return nil
}

// walkObject walks an object whose value types come from elem (nil: an
// unknown field, whose value is skipped).
func (w *walker) walkObject(tok json.Token, off int, path string, elem func(key string) reflect.Type) error {
	if tok != json.Delim('{') {
		return w.mismatch(tok, off, path, "want an object, got %s", describe(tok))
	}
	for w.dec.More() {
		kt, keyOff, err := w.next()
		if err != nil {
			return err
		}
		key, _ := kt.(string)
		t := elem(key)
		if t == nil {
			w.fail(keyOff, path, "unknown field %q", key)
			vt, _, err := w.next()
			if err != nil {
				return err
			}
			if err := w.skip(vt); err != nil {
				return err
			}
			continue
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
