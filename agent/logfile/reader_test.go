package logfile

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func openReader(t *testing.T, path string, tail int) *Reader {
	t.Helper()
	r, err := OpenReader(path, tail)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// readNow reads what the log holds now, in small reads.
func readNow(t *testing.T, r *Reader) string {
	t.Helper()
	var b strings.Builder
	buf := make([]byte, 7)
	for range 100000 {
		n, err := r.Read(buf)
		b.Write(buf[:n])
		if errors.Is(err, io.EOF) {
			return b.String()
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	t.Fatal("no EOF")
	return ""
}

func TestReaderReadsRotatedFilesOldestFirst(t *testing.T) {
	path := logPath(t)
	w := newWriter(t, path, 100, 3)
	write(t, w, lines(0, 35))
	if got := readNow(t, openReader(t, path, 0)); got != lines(10, 25) {
		t.Errorf("read %q, want lines 10-34", got)
	}
}

func TestReaderPending(t *testing.T) {
	path := logPath(t)
	w := newWriter(t, path, 100, 3)
	write(t, w, lines(0, 35))
	r := openReader(t, path, 8)
	if n, err := r.Pending(); n != 80 || err != nil {
		t.Errorf("Pending = %d, %v; want the 80 bytes of the last 8 lines", n, err)
	}
	readNow(t, r)
	write(t, w, lines(35, 1))
	if n, err := r.Pending(); n != 10 || err != nil {
		t.Errorf("Pending after a write = %d, %v; want 10", n, err)
	}
	// The rest of the file rotated away and the new live file.
	write(t, w, lines(36, 5))
	if n, err := r.Pending(); n != 60 || err != nil {
		t.Errorf("Pending after a rotation = %d, %v; want 60", n, err)
	}
	// A log that appears after the reader was opened.
	late := openReader(t, logPath(t), 0)
	if n, err := late.Pending(); n != 0 || err != nil {
		t.Errorf("Pending of no log = %d, %v", n, err)
	}
	w = newWriter(t, late.path, 100, 3)
	write(t, w, lines(0, 2))
	if n, err := late.Pending(); n != 20 || err != nil {
		t.Errorf("Pending of a new log = %d, %v; want 20", n, err)
	}
}

func TestReaderTail(t *testing.T) {
	path := logPath(t)
	w := newWriter(t, path, 100, 3)
	write(t, w, lines(0, 35))
	for _, tt := range []struct {
		n    int
		want string
	}{
		{1, lines(34, 1)},
		{5, lines(30, 5)},
		{8, lines(27, 8)}, // into the newest rotated file
		{15, lines(20, 15)},
		{40, lines(20, 15)}, // no further back than one rotated file
	} {
		if got := readNow(t, openReader(t, path, tt.n)); got != tt.want {
			t.Errorf("tail %d = %q, want %q", tt.n, got, tt.want)
		}
	}
}

// A reader that reads between writes sees every line once, in order,
// across rotations, with several files or one.
func TestReaderFollowsRotations(t *testing.T) {
	for _, files := range []int{3, 1} {
		path := logPath(t)
		w := newWriter(t, path, 100, files)
		write(t, w, lines(0, 3))
		r := openReader(t, path, 0)
		var got strings.Builder
		got.WriteString(readNow(t, r))
		for i := 3; i < 60; i += 4 {
			write(t, w, lines(i, 4))
			got.WriteString(readNow(t, r))
		}
		if got.String() != lines(0, 63) {
			t.Errorf("%d files: followed %q", files, got.String())
		}
	}
}

// Rotations between two reads lose the files the reader never had open,
// and nothing else: it finishes its file, then reads the live one.
func TestReaderSkipsFilesRotatedAwayUnseen(t *testing.T) {
	path := logPath(t)
	w := newWriter(t, path, 100, 2)
	write(t, w, lines(0, 5))
	r := openReader(t, path, 0)
	if got := readNow(t, r); got != lines(0, 5) {
		t.Fatalf("read %q", got)
	}
	write(t, w, lines(5, 22))
	if got := readNow(t, r); got != lines(5, 5)+lines(20, 7) {
		t.Errorf("read %q, want lines 5-9 then 20-26", got)
	}
}

func TestReaderWaitsForALogThatDoesNotExistYet(t *testing.T) {
	path := logPath(t)
	r := openReader(t, path, 3)
	if got := readNow(t, r); got != "" {
		t.Fatalf("read %q from no file", got)
	}
	w := newWriter(t, path, 100, 3)
	write(t, w, lines(0, 2))
	if got := readNow(t, r); got != lines(0, 2) {
		t.Errorf("read %q", got)
	}
}

func TestOpenReaderReportsUnreadableLogs(t *testing.T) {
	path := logPath(t)
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		t.Fatal(err)
	}
	// A directory opens but does not read: it is reported, not skipped.
	if err := os.Mkdir(path, 0o750); err != nil {
		t.Fatal(err)
	}
	r, err := OpenReader(path, 0)
	if err == nil {
		_, err = r.Read(make([]byte, 10))
		r.Close()
	}
	if err == nil {
		t.Error("reading a directory as a log: no error")
	}
}

func TestSeekTail(t *testing.T) {
	long := strings.Repeat("line of the log\n", 5000)
	tests := []struct {
		name    string
		content string
		n       int
		want    string
		found   int
	}{
		{"empty file", "", 3, "", 0},
		{"fewer lines than asked", "a\nb\n", 5, "a\nb\n", 2},
		{"exact", "a\nb\nc\n", 3, "a\nb\nc\n", 3},
		{"last two", "a\nb\nc\n", 2, "b\nc\n", 2},
		{"last one", "a\nb\nc\n", 1, "c\n", 1},
		{"no final newline", "a\nb\nc", 1, "c", 1},
		{"no final newline, two", "a\nb\nc", 2, "b\nc", 2},
		{"no final newline, all", "a\nb\nc", 5, "a\nb\nc", 3},
		{"blank lines count", "a\n\n\nb\n", 2, "\nb\n", 2},
		{"across blocks", long, 3, strings.Repeat("line of the log\n", 3), 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "log")
			if err := os.WriteFile(path, []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			found, err := seekTail(f, tt.n)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(f)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want || found != tt.found {
				t.Errorf("tail %d = %q, %d lines; want %q, %d", tt.n, got, found, tt.want, tt.found)
			}
		})
	}
}
