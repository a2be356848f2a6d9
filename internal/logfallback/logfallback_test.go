package logfallback

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// stream fails every write once broken is set.
type stream struct {
	got    strings.Builder
	broken error
}

func (s *stream) Write(p []byte) (int, error) {
	if s.broken != nil {
		return 0, s.broken
	}
	return s.got.Write(p)
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	return string(b)
}

func TestSwitchesForGoodOnFirstFailure(t *testing.T) {
	path := filepath.Join(t.TempDir(), "allexmaster.log")
	s := &stream{}
	w := New(s, "stderr")
	w.SetFile(path)
	for _, line := range []string{"one\n", "two\n"} {
		if n, err := w.Write([]byte(line)); n != len(line) || err != nil {
			t.Fatalf("Write %q: %d, %v", line, n, err)
		}
	}
	if w.FellBack() || readFile(t, path) != "" {
		t.Fatalf("fell back while the stream works: file %q", readFile(t, path))
	}
	s.broken = errors.New("write /dev/stderr: broken pipe")
	if n, err := w.Write([]byte("three\n")); n != 6 || err != nil {
		t.Fatalf("Write after the stream broke: %d, %v", n, err)
	}
	s.broken = nil // a stream that works again is not taken back
	w.Write([]byte("four\n"))
	if got := s.got.String(); got != "one\ntwo\n" {
		t.Errorf("stream got %q", got)
	}
	lines := strings.Split(readFile(t, path), "\n")
	if len(lines) != 4 || !strings.Contains(lines[0], "stderr failed (write /dev/stderr: broken pipe); the log continues in this file") ||
		lines[1] != "three" || lines[2] != "four" {
		t.Errorf("file:\n%s", strings.Join(lines, "\n"))
	}
	if !w.FellBack() {
		t.Error("FellBack is false")
	}
}

// TestLinesBeforeTheFileIsKnown: the stream breaks before the file is
// named; those lines are counted as lost, the later ones kept.
func TestLinesBeforeTheFileIsKnown(t *testing.T) {
	path := filepath.Join(t.TempDir(), "allexmaster.log")
	w := New(&stream{broken: errors.New("EPIPE")}, "stdout")
	w.Write([]byte("early\n"))
	w.SetFile(path)
	w.Write([]byte("late\n"))
	got := readFile(t, path)
	if !strings.Contains(got, "stdout failed (EPIPE); the log continues in this file; lines lost before it: 1\nlate\n") {
		t.Errorf("file:\n%s", got)
	}
}

// TestUnopenableFile: the lines are dropped, the writer does not fail and
// does not try the file again.
func TestUnopenableFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "missing", "allexmaster.log")
	w := New(&stream{broken: errors.New("EPIPE")}, "stderr")
	w.SetFile(path)
	for range 2 {
		if n, err := w.Write([]byte("x\n")); n != 2 || err != nil {
			t.Fatalf("Write: %d, %v", n, err)
		}
	}
	if w.path != "" {
		t.Errorf("still trying %s", w.path)
	}
}
