package logfile

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"sync"
)

// ErrClosed is what Write returns after Close.
var ErrClosed = errors.New("logfile: writer closed")

// Writer appends to a log file and rotates it once it holds maxSize bytes.
// No file ever holds more than maxSize bytes: a write that does not fit
// goes to the next file from just after its last newline that fits (the
// whole write when no line ends in the room left and the file is not
// empty), so lines are split only when one is longer than a file. It runs
// no goroutine: rotation happens inside Write.
type Writer struct {
	path     string
	maxSize  int64
	maxFiles int

	mu     sync.Mutex
	f      *os.File // nil after a failed rotation, until the next Write
	size   int64
	closed bool
}

// NewWriter opens path for appending, creating it and its directory as
// needed, and counts what it already holds: a master started again
// continues the same file. maxSize and maxFiles (the live file included)
// must be at least 1.
func NewWriter(path string, maxSize int64, maxFiles int) (*Writer, error) {
	if maxSize < 1 || maxFiles < 1 || maxFiles > MaxFiles {
		return nil, fmt.Errorf("logfile: %s: max size %d and max files %d must be at least 1 (files at most %d)", path, maxSize, maxFiles, MaxFiles)
	}
	w := &Writer{path: path, maxSize: maxSize, maxFiles: maxFiles}
	if err := w.open(); err != nil {
		return nil, err
	}
	return w, nil
}

// Path is the live file's path.
func (w *Writer) Path() string { return w.path }

// open opens the live file and takes its size.
func (w *Writer) open() error {
	f, err := openAppend(w.path)
	if errors.Is(err, fs.ErrNotExist) {
		// The directory is made on first use rather than checked at
		// every open.
		if err := os.MkdirAll(filepath.Dir(w.path), 0o750); err != nil {
			return fmt.Errorf("logfile: log dir: %w", err)
		}
		f, err = openAppend(w.path)
	}
	if err != nil {
		return fmt.Errorf("logfile: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return fmt.Errorf("logfile: %w", err)
	}
	w.f, w.size = f, fi.Size()
	return nil
}

// Write appends p, rotating as often as it takes. On an error the rest of
// p is not written; the next Write tries again (a full disk loses what was
// written meanwhile, but never blocks the caller or grows past the limits).
func (w *Writer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return 0, ErrClosed
	}
	written, idle := 0, 0
	for len(p) > 0 {
		n := 0
		if w.f != nil {
			n = w.fit(p)
		}
		if n == 0 {
			// A rotation always leaves an empty file, where fit finds
			// room: a second one in a row without a byte written means
			// something else writes to the file.
			if idle++; idle > 2 {
				return written, fmt.Errorf("logfile: %s: no room after rotating", w.path)
			}
			if err := w.rotate(); err != nil {
				return written, err
			}
			continue
		}
		idle = 0
		m, err := w.f.Write(p[:n])
		w.size += int64(m)
		written += m
		p = p[m:]
		if err != nil {
			return written, fmt.Errorf("logfile: %w", err)
		}
	}
	return written, nil
}

// fit returns how much of p goes into the live file; 0 means rotate first.
func (w *Writer) fit(p []byte) int {
	room := w.maxSize - w.size
	switch {
	case room <= 0:
		return 0
	case int64(len(p)) <= room:
		return len(p)
	}
	if i := bytes.LastIndexByte(p[:room], '\n'); i >= 0 {
		return i + 1
	}
	if w.size > 0 {
		return 0
	}
	return int(room)
}

// rotate closes the live file, shifts the rotated ones up by one (the
// oldest is overwritten) and opens a new live file. With a failed shift
// the live file stays closed: nothing is written until a later rotation
// succeeds, so the limits hold.
func (w *Writer) rotate() error {
	if w.f != nil {
		err := w.f.Close()
		w.f = nil
		if err := errors.Join(err, w.shift()); err != nil {
			return fmt.Errorf("logfile: rotate %s: %w", w.path, err)
		}
	}
	return w.open()
}

// shift renames name.i to name.i+1 from the oldest down, and the live
// file to name.1; with one file the live file is removed. Files past the
// chain, left by a larger maxFiles, are removed too.
func (w *Writer) shift() error {
	for i := w.maxFiles; i < MaxFiles; i++ {
		if err := os.Remove(w.numbered(i)); err != nil {
			break
		}
	}
	if w.maxFiles == 1 {
		return os.Remove(w.path)
	}
	for i := w.maxFiles - 2; i >= 1; i-- {
		if err := os.Rename(w.numbered(i), w.numbered(i+1)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return os.Rename(w.path, w.numbered(1))
}

func (w *Writer) numbered(i int) string { return Rotated(w.path, i) }

// Rotated is the path of the i-th rotated file of the log at path (1 is
// the newest).
func Rotated(path string, i int) string { return path + "." + strconv.Itoa(i) }

// Close closes the live file; later writes fail with ErrClosed.
func (w *Writer) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return nil
	}
	w.closed = true
	if w.f == nil {
		return nil
	}
	err := w.f.Close()
	w.f = nil
	return err
}
