package lanmanager

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/allex-go/allex/internal/jsonkeys"
	"github.com/allex-go/allex/lanmanager/lanstate"
	"github.com/allex-go/allex/lanwire"
)

type needsFile struct {
	Needs []json.RawMessage `json:"needs"`
}

// utf8BOM is skipped at the start of a needs file, as in the master's
// config: Windows editors write one and RFC 8259 lets a parser ignore it.
var utf8BOM = []byte{0xEF, 0xBB, 0xBF}

// ParseNeedsFile strictly parses one needs file's content; name is used in
// error messages only.
func ParseNeedsFile(name string, data []byte) ([]lanwire.Need, error) {
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
	out := make([]lanwire.Need, 0, len(f.Needs))
	for i, raw := range f.Needs {
		n, err := lanwire.DecodeNeed(raw)
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

// loadNeedsFiles reads and layers files: later files win per instance. The
// result keeps first-appearance order.
func loadNeedsFiles(paths []string) ([]lanstate.FileNeed, error) {
	var order []string
	byInstance := map[string]lanstate.FileNeed{}
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("needs file: %w", err)
		}
		needs, err := ParseNeedsFile(p, data)
		if err != nil {
			return nil, err
		}
		for _, n := range needs {
			if _, ok := byInstance[n.Instance]; !ok {
				order = append(order, n.Instance)
			}
			byInstance[n.Instance] = lanstate.FileNeed{Need: n, Origin: "file:" + p}
		}
	}
	out := make([]lanstate.FileNeed, 0, len(order))
	for _, inst := range order {
		out = append(out, byInstance[inst])
	}
	return out, nil
}
