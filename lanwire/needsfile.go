package lanwire

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/allex-go/allex/internal/jsonkeys"
)

type needsFile struct {
	Needs []json.RawMessage `json:"needs"`
}

// utf8BOM is skipped at the start of a needs file, as in the master's
// config: Windows editors write one and RFC 8259 lets a parser ignore it.
var utf8BOM = []byte{0xEF, 0xBB, 0xBF}

// ParseNeedsFile strictly parses one needs file's content; name is used in
// error messages only. It lives here, next to Need, so that allexctl can
// check a needs file without linking the LAN manager.
func ParseNeedsFile(name string, data []byte) ([]Need, error) {
	data = bytes.TrimPrefix(data, utf8BOM)
	if err := jsonkeys.Unique(data); err != nil {
		return nil, fmt.Errorf("needs file %s: %w", name, err)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var f needsFile
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("needs file %s: %w", name, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("needs file %s: trailing data after JSON value", name)
	}
	if f.Needs == nil {
		return nil, fmt.Errorf("needs file %s: missing \"needs\" list", name)
	}
	seen := map[string]int{}
	out := make([]Need, 0, len(f.Needs))
	for i, raw := range f.Needs {
		n, err := DecodeNeed(raw)
		if err == nil {
			err = n.CheckFixedPorts()
		}
		if err != nil {
			return nil, fmt.Errorf("needs file %s: needs[%d] (instance %q): %w", name, i, instanceOf(raw), err)
		}
		if j, dup := seen[n.Instance]; dup {
			return nil, fmt.Errorf("needs file %s: needs[%d]: instance %q already defined at needs[%d]", name, i, n.Instance, j)
		}
		seen[n.Instance] = i
		out = append(out, n)
	}
	return out, nil
}

// instanceOf digs the instance name out of a need that failed to decode,
// so the error can name it.
func instanceOf(raw json.RawMessage) string {
	var v struct {
		Instance string `json:"instance"`
	}
	_ = json.Unmarshal(raw, &v)
	return v.Instance
}
