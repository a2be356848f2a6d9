package statefile

import (
	"cmp"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/hashicorp/go-hclog"
)

// File names in the state directory.
const (
	// JournalName is the journal of live children.
	JournalName = "children.jsonl"
	// LegacyName is the JSON array of live children that masters before
	// the journal rewrote on every change; Load still reads it.
	LegacyName = "children.json"
)

// compactSlack is how many lines beyond twice the live entries the journal
// may hold before it is rewritten, so a small live set is not rewritten on
// nearly every change.
const compactSlack = 256

// retryAfter spaces the attempts to rewrite the journal after a failed
// write, so a full disk costs one file creation a second, not one a record.
const retryAfter = time.Second

// Entry is one live child.
type Entry struct {
	Instance string `json:"instance"`
	PID      int    `json:"pid"`
	// Start is the process start time in clock ticks since boot (field
	// 22 of /proc/<pid>/stat), so a recycled pid is never mistaken for the
	// child; 0 when unknown.
	Start uint64 `json:"start"`
}

type key struct {
	instance string
	pid      int
}

// Journal appends the changes of the live set to the journal file. It is
// safe for concurrent use; a nil *Journal records nothing. Write errors are
// logged, never returned: the in-memory live set stays right, and the file
// is rewritten from it at the next change a second or more later.
type Journal struct {
	log  hclog.Logger
	path string

	mu      sync.Mutex
	f       *os.File // O_APPEND; nil once closed
	live    map[key]uint64
	lines   int       // lines in the file
	dirty   bool      // a write failed: the file misses records
	tried   time.Time // last rewrite attempt while dirty
	buf     []byte
	closed  bool
	lastErr error
}

// Open starts a fresh, empty journal in dir, and removes the children.json
// of an earlier version: call it once the leftovers Load returned are dealt
// with.
func Open(dir string, log hclog.Logger) (*Journal, error) {
	if log == nil {
		log = hclog.NewNullLogger()
	}
	path := filepath.Join(dir, JournalName)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|os.O_APPEND, 0o640)
	if err != nil {
		return nil, fmt.Errorf("state journal: %w", err)
	}
	if err := os.Remove(filepath.Join(dir, LegacyName)); err != nil && !os.IsNotExist(err) {
		log.Warn("cannot remove old state file", "error", err)
	}
	return &Journal{log: log, path: path, f: f, live: map[key]uint64{}}, nil
}

// Add records that the child instance runs as pid, started at start.
func (j *Journal) Add(instance string, pid int, start uint64) {
	if j == nil {
		return
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.closed {
		return
	}
	j.live[key{instance, pid}] = start
	j.buf = appendRecord(j.buf[:0], "add", instance, pid, start)
	j.writeLocked()
}

// Del records that pid, a run of instance, has exited. It does nothing if
// that run is not live, so it may be called more than once.
func (j *Journal) Del(instance string, pid int) {
	if j == nil {
		return
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	k := key{instance, pid}
	if _, ok := j.live[k]; !ok || j.closed {
		return
	}
	delete(j.live, k)
	j.buf = appendRecord(j.buf[:0], "del", instance, pid, 0)
	j.writeLocked()
}

// Live returns the live entries, sorted by instance and pid.
func (j *Journal) Live() []Entry {
	if j == nil {
		return nil
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.entriesLocked()
}

// Close leaves the file holding exactly the live set (empty once every
// child has exited) and closes it; later records are ignored.
func (j *Journal) Close() error {
	if j == nil {
		return nil
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.closed {
		return nil
	}
	j.closed = true
	var err error
	if j.dirty || j.lines > len(j.live) {
		err = j.compactLocked()
	}
	if j.f != nil {
		if cerr := j.f.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("state journal: %w", cerr)
		}
		j.f = nil
	}
	return err
}

// writeLocked appends the record in j.buf with one write, or, after a
// failed write, rewrites the whole live set instead.
func (j *Journal) writeLocked() {
	if j.dirty {
		if time.Since(j.tried) < retryAfter {
			return
		}
		j.tried = time.Now()
		if err := j.compactLocked(); err != nil {
			j.warn("cannot rewrite state journal", err)
			return
		}
		j.dirty = false
		j.lastErr = nil
		return
	}
	if _, err := j.f.Write(j.buf); err != nil {
		// A short write may have left half a line: only a rewrite makes the
		// file whole again.
		j.warn("cannot append to state journal", err)
		j.dirty = true
		j.tried = time.Now()
		return
	}
	j.lines++
	if j.lines > 2*len(j.live)+compactSlack {
		if err := j.compactLocked(); err != nil {
			j.warn("cannot compact state journal", err)
			j.dirty = true
			j.tried = time.Now()
		}
	}
}

// warn logs a write error once until the journal is whole again, so a full
// disk does not flood the log with one warning per child event.
func (j *Journal) warn(msg string, err error) {
	if j.lastErr != nil {
		return
	}
	j.lastErr = err
	j.log.Warn(msg, "path", j.path, "error", err)
}

// compactLocked writes the live set to a tmp file, renames it over the
// journal and appends to it from then on. On error the old descriptor is
// kept.
func (j *Journal) compactLocked() error {
	var b []byte
	for _, e := range j.entriesLocked() {
		b = appendRecord(b, "add", e.Instance, e.PID, e.Start)
	}
	tmp := j.path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|os.O_APPEND, 0o640)
	if err != nil {
		return fmt.Errorf("state journal: %w", err)
	}
	if _, err := f.Write(b); err != nil {
		_ = f.Close()
		_ = os.Remove(tmp)
		return fmt.Errorf("state journal: %w", err)
	}
	if err := os.Rename(tmp, j.path); err != nil {
		_ = f.Close()
		_ = os.Remove(tmp)
		return fmt.Errorf("state journal: %w", err)
	}
	// The descriptor follows the file to its new name.
	if j.f != nil {
		_ = j.f.Close()
	}
	j.f = f
	j.lines = len(j.live)
	return nil
}

func (j *Journal) entriesLocked() []Entry { return entries(j.live) }

// entries lists a live set, sorted.
func entries(live map[key]uint64) []Entry {
	out := make([]Entry, 0, len(live))
	for k, st := range live {
		out = append(out, Entry{Instance: k.instance, PID: k.pid, Start: st})
	}
	sortEntries(out)
	return out
}

func sortEntries(es []Entry) {
	slices.SortFunc(es, func(a, b Entry) int {
		return cmp.Or(cmp.Compare(a.Instance, b.Instance), cmp.Compare(a.PID, b.PID))
	})
}

// record is one journal line.
type record struct {
	Op       string `json:"op"`
	Instance string `json:"instance"`
	PID      int    `json:"pid"`
	Start    uint64 `json:"start"`
}

// appendRecord appends one journal line to b. It builds the JSON by hand:
// it runs on every child start and exit, and encoding/json would allocate.
func appendRecord(b []byte, op, instance string, pid int, start uint64) []byte {
	b = append(b, `{"op":"`...)
	b = append(b, op...)
	b = append(b, `","instance":`...)
	b = appendString(b, instance)
	b = append(b, `,"pid":`...)
	b = strconv.AppendInt(b, int64(pid), 10)
	if op == "add" {
		b = append(b, `,"start":`...)
		b = strconv.AppendUint(b, start, 10)
	}
	return append(b, "}\n"...)
}

// appendString appends s as a JSON string; instance names are plain ASCII
// (the agent validates them), anything else goes through encoding/json.
func appendString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '"' || c == '\\' || c >= utf8.RuneSelf {
			q, _ := json.Marshal(s) // a string always marshals
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}
