package statefile

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/hashicorp/go-hclog"
)

// Load returns the children a previous master recorded as live in dir: the
// journal replayed, plus the entries of an earlier version's children.json.
// A torn or malformed line is skipped with a warning naming the file and
// the line; the other records count. Missing files are no error; a file
// that cannot be read is, and the entries of the other are still returned.
func Load(dir string, log hclog.Logger) ([]Entry, error) {
	if log == nil {
		log = hclog.NewNullLogger()
	}
	live := map[key]uint64{}
	var errs []error
	if err := loadLegacy(filepath.Join(dir, LegacyName), live, log); err != nil {
		errs = append(errs, err)
	}
	if err := replay(filepath.Join(dir, JournalName), live, log); err != nil {
		errs = append(errs, err)
	}
	return entries(live), errors.Join(errs...)
}

// loadLegacy adds the entries of a children.json array to live.
func loadLegacy(path string, live map[key]uint64, log hclog.Logger) error {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("state file: %w", err)
	}
	var es []Entry
	if err := json.Unmarshal(b, &es); err != nil {
		log.Warn("ignoring unreadable state file", "path", path, "error", err)
		return nil
	}
	for _, e := range es {
		live[key{e.Instance, e.PID}] = e.Start
	}
	return nil
}

// replay applies the journal at path to live.
func replay(path string, live map[key]uint64, log hclog.Logger) error {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("state journal: %w", err)
	}
	lines := bytes.Split(b, []byte("\n"))
	for i, line := range lines {
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		r, err := parseRecord(line)
		if err != nil {
			msg := "skipping malformed line in state journal"
			if i == len(lines)-1 {
				// No newline after it: the master died in the middle of
				// writing it.
				msg = "skipping torn last line of state journal"
			}
			log.Warn(msg, "path", path, "line", i+1, "error", err)
			continue
		}
		k := key{r.Instance, r.PID}
		if r.Op == "add" {
			live[k] = r.Start
		} else {
			delete(live, k)
		}
	}
	return nil
}

func parseRecord(line []byte) (record, error) {
	var r record
	if err := json.Unmarshal(line, &r); err != nil {
		return r, err
	}
	switch {
	case r.Op != "add" && r.Op != "del":
		return r, fmt.Errorf("unknown op %q", r.Op)
	case r.Instance == "":
		return r, errors.New("no instance")
	case r.PID <= 0:
		return r, fmt.Errorf("pid %d", r.PID)
	}
	return r, nil
}
