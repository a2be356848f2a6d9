package logfile

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// lines returns n numbered lines of 10 bytes each, from first.
func lines(first, n int) string {
	var b strings.Builder
	for i := first; i < first+n; i++ {
		fmt.Fprintf(&b, "line %04d\n", i)
	}
	return b.String()
}

func logPath(t *testing.T) string {
	return filepath.Join(t.TempDir(), "logs", "x.log")
}

func newWriter(t *testing.T, path string, size int64, files int) *Writer {
	t.Helper()
	w, err := NewWriter(path, size, files)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	return w
}

func write(t *testing.T, w *Writer, s string) {
	t.Helper()
	if n, err := w.Write([]byte(s)); err != nil || n != len(s) {
		t.Fatalf("Write(%d bytes) = %d, %v", len(s), n, err)
	}
}

// files returns the content of the log's files by suffix ("" is the live
// file, ".1" the newest rotated one).
func files(t *testing.T, path string) map[string]string {
	t.Helper()
	out := map[string]string{}
	matches, err := filepath.Glob(path + "*")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range matches {
		b, err := os.ReadFile(m)
		if err != nil {
			t.Fatal(err)
		}
		out[strings.TrimPrefix(m, path)] = string(b)
	}
	return out
}

func checkFiles(t *testing.T, path string, want map[string]string) {
	t.Helper()
	got := files(t, path)
	if !maps.Equal(got, want) {
		t.Errorf("files %v:\n%q\nwant %v:\n%q", slices.Sorted(maps.Keys(got)), got, slices.Sorted(maps.Keys(want)), want)
	}
}

func TestWriterRotatesAtSizeAndDropsTheOldest(t *testing.T) {
	path := logPath(t)
	w := newWriter(t, path, 100, 3)
	for i := range 35 {
		write(t, w, lines(i, 1))
	}
	// Files of exactly 100 bytes; lines 0-9 went with the oldest file.
	checkFiles(t, path, map[string]string{"": lines(30, 5), ".1": lines(20, 10), ".2": lines(10, 10)})
}

func TestWriterSplitsAWriteAtItsLastNewlineThatFits(t *testing.T) {
	path := logPath(t)
	w := newWriter(t, path, 100, 5)
	write(t, w, lines(0, 8))
	// 80 bytes in: of the next 35 (3.5 lines), two lines fit.
	write(t, w, lines(8, 3)+"tail")
	checkFiles(t, path, map[string]string{".1": lines(0, 10), "": lines(10, 1) + "tail"})
}

func TestWriterStartsALineThatDoesNotFitInANewFile(t *testing.T) {
	path := logPath(t)
	w := newWriter(t, path, 100, 5)
	write(t, w, lines(0, 9))
	long := strings.Repeat("x", 30) + "\n"
	write(t, w, long)
	checkFiles(t, path, map[string]string{".1": lines(0, 9), "": long})
}

func TestWriterSplitsALineLongerThanAFile(t *testing.T) {
	path := logPath(t)
	w := newWriter(t, path, 100, 3)
	long := strings.Repeat("y", 250)
	write(t, w, long)
	checkFiles(t, path, map[string]string{".2": long[:100], ".1": long[100:200], "": long[200:]})
}

func TestWriterWithOneFileStartsAfresh(t *testing.T) {
	path := logPath(t)
	w := newWriter(t, path, 100, 1)
	write(t, w, lines(0, 10))
	write(t, w, lines(10, 3))
	checkFiles(t, path, map[string]string{"": lines(10, 3)})
}

func TestWriterContinuesAnExistingLog(t *testing.T) {
	path := logPath(t)
	w := newWriter(t, path, 100, 3)
	write(t, w, lines(0, 16))
	w.Close()
	// A master started again counts what the live file holds.
	w = newWriter(t, path, 100, 3)
	write(t, w, lines(16, 5))
	checkFiles(t, path, map[string]string{".2": lines(0, 10), ".1": lines(10, 10), "": lines(20, 1)})
}

func TestWriterRotatesAFileAlreadyOverANewLimit(t *testing.T) {
	path := logPath(t)
	w := newWriter(t, path, 1000, 3)
	write(t, w, lines(0, 30))
	w.Close()
	w = newWriter(t, path, 100, 3)
	write(t, w, lines(30, 1))
	checkFiles(t, path, map[string]string{".1": lines(0, 30), "": lines(30, 1)})
}

func TestWriterRemovesFilesPastAShorterChain(t *testing.T) {
	path := logPath(t)
	w := newWriter(t, path, 100, 5)
	write(t, w, lines(0, 45))
	w.Close()
	w = newWriter(t, path, 100, 2)
	write(t, w, lines(45, 10))
	checkFiles(t, path, map[string]string{".1": lines(40, 10), "": lines(50, 5)})
}

func TestNewWriterRefusesBadLimitsAndPaths(t *testing.T) {
	dir := t.TempDir()
	blocker := filepath.Join(dir, "file")
	if err := os.WriteFile(blocker, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name  string
		path  string
		size  int64
		files int
		want  string
	}{
		{"zero size", filepath.Join(dir, "a.log"), 0, 3, "max size 0"},
		{"zero files", filepath.Join(dir, "a.log"), 100, 0, "max files 0"},
		{"too many files", filepath.Join(dir, "a.log"), 100, MaxFiles + 1, "max files 1001"},
		{"dir is a file", filepath.Join(blocker, "sub", "a.log"), 100, 3, "sub/a.log: not a directory"},
		{"dir cannot be made", "/proc/allex-logs/a.log", 100, 3, "log dir"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			w, err := NewWriter(tt.path, tt.size, tt.files)
			if err == nil {
				w.Close()
				t.Fatal("no error")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q lacks %q", err, tt.want)
			}
		})
	}
}

func TestWriterAfterCloseFails(t *testing.T) {
	w := newWriter(t, logPath(t), 100, 3)
	w.Close()
	if _, err := w.Write([]byte("late\n")); !errors.Is(err, ErrClosed) {
		t.Errorf("Write after Close: %v, want ErrClosed", err)
	}
}

// A rotation that cannot rename writes nothing past the limit, reports
// why, and the log resumes once the obstacle is gone.
func TestWriterFailedRotationLosesTheWriteNotTheLimit(t *testing.T) {
	path := logPath(t)
	w := newWriter(t, path, 100, 2)
	write(t, w, lines(0, 10))
	// A non-empty directory where the live file is to be renamed to.
	if err := os.MkdirAll(filepath.Join(path+".1", "x"), 0o750); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if n, err := w.Write([]byte(lines(10, 1))); err == nil || !strings.Contains(err.Error(), "rotate") {
			t.Fatalf("Write = %d, %v; want a rotation error", n, err)
		}
	}
	if fi, err := os.Stat(path); err != nil || fi.Size() != 100 {
		t.Fatalf("live file: %v, %v; want it untouched at 100 bytes", fi, err)
	}
	if err := os.RemoveAll(path + ".1"); err != nil {
		t.Fatal(err)
	}
	write(t, w, lines(12, 1))
	checkFiles(t, path, map[string]string{".1": lines(0, 10), "": lines(12, 1)})
}
