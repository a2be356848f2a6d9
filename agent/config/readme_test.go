package config

import (
	"encoding/json"
	"os"
	"reflect"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
)

// readmeKeyRow is one row of the README's table of config keys.
type readmeKeyRow struct {
	keys []string
	def  string
}

var backticked = regexp.MustCompile("`([^`]*)`")

// readmeKeyTable reads the rows of the table that follows "All keys:" in
// the README, up to the blank line after it.
func readmeKeyTable(t *testing.T) []readmeKeyRow {
	t.Helper()
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, after, ok := strings.Cut(string(b), "All keys:")
	if !ok {
		t.Fatal(`README.md has no "All keys:"`)
	}
	var rows []readmeKeyRow
	inTable := false
	for line := range strings.Lines(after) {
		line = strings.TrimSpace(line)
		if !strings.HasPrefix(line, "|") {
			if inTable {
				break
			}
			continue
		}
		inTable = true
		cells := strings.Split(strings.Trim(line, "|"), "|")
		if len(cells) != 3 {
			t.Fatalf("README key table row %q: %d cells, want 3", line, len(cells))
		}
		var keys []string
		for _, m := range backticked.FindAllStringSubmatch(cells[0], -1) {
			keys = append(keys, m[1])
		}
		if len(keys) == 0 {
			continue // the header and the separator
		}
		rows = append(rows, readmeKeyRow{keys: keys, def: strings.Trim(strings.TrimSpace(cells[2]), "`")})
	}
	if len(rows) == 0 {
		t.Fatal("README.md: no rows in the key table after \"All keys:\"")
	}
	return rows
}

// appliedDefault renders the value a file without key gets, as the README
// writes it.
func appliedDefault(v reflect.Value) string {
	if m, ok := v.Interface().(json.Marshaler); ok {
		b, err := m.MarshalJSON()
		if err != nil {
			return "?" + err.Error()
		}
		return string(b)
	}
	switch v.Kind() {
	case reflect.String:
		return v.String()
	case reflect.Int:
		return strconv.FormatInt(v.Int(), 10)
	case reflect.Bool:
		return strconv.FormatBool(v.Bool())
	case reflect.Uint16:
		return strconv.FormatUint(v.Uint(), 10)
	case reflect.Struct:
		parts := make([]string, v.NumField())
		for i := range parts {
			parts[i] = appliedDefault(v.Field(i))
		}
		return strings.Join(parts, " / ")
	case reflect.Map, reflect.Slice:
		if v.Len() == 0 {
			return ""
		}
	}
	return "?" + v.Kind().String()
}

// TestREADMEKeyTable holds the README's table of config keys and the code
// together: every documented key is one the parser knows, every key it
// knows is documented, and the documented default is what a file without
// the key gets.
func TestREADMEKeyTable(t *testing.T) {
	cfg, err := Parse("{}", []byte("{}"))
	if err != nil {
		t.Fatal(err)
	}
	cfg = cfg.WithDefaults("")
	// Defaults the README describes in words, and what they are in code.
	described := map[string]string{
		"machineid":   "host name",
		"address":     "local address of the link",
		"token":       "none",
		"tokenfile":   "none",
		"socketgroup": "none",
	}
	if cfg.MachineID != hostMachineID() || cfg.Address != "" || cfg.Token != "" || cfg.TokenFile != "" || cfg.SocketGroup != "" {
		t.Fatalf("machineid %q, address %q, token %q, tokenfile %q: not what the README describes", cfg.MachineID, cfg.Address, cfg.Token, cfg.TokenFile)
	}
	documented := map[string]bool{}
	ct, cv := reflect.TypeFor[Config](), reflect.ValueOf(cfg)
	for _, row := range readmeKeyTable(t) {
		for _, key := range row.keys {
			documented[key] = true
			if _, ok := fieldByTag(ct, key); !ok {
				t.Errorf("README documents key %q, which the parser does not know", key)
				continue
			}
			if want, ok := described[key]; ok {
				if row.def != want {
					t.Errorf("README: %s defaults to %q, want %q", key, row.def, want)
				}
				continue
			}
			if key == "socket" && runtime.GOOS == "windows" {
				continue // the README documents the Unix socket
			}
			if got := appliedDefault(cv.FieldByIndex(fieldIndex(ct, key))); got != row.def {
				t.Errorf("README: %s defaults to %q; a file without it gets %q", key, row.def, got)
			}
		}
	}
	for i := range ct.NumField() {
		name, _, _ := strings.Cut(ct.Field(i).Tag.Get("json"), ",")
		if !documented[name] {
			t.Errorf("key %q is missing from the README's key table", name)
		}
	}
}

// fieldIndex finds the index of the field whose JSON name is key.
func fieldIndex(t reflect.Type, key string) []int {
	for i := range t.NumField() {
		if name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ","); name == key {
			return []int{i}
		}
	}
	return nil
}
