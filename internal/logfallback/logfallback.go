// Package logfallback keeps a daemon's log going when the stream it logs
// to stops taking writes: a pipe whose reader exited (`allexmaster | head`),
// a terminal that went away. The first failed write switches the log, for
// good, to a file, which says once why.
package logfallback

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

// Writer writes to its stream until a write fails, then to its file.
// Writes never fail: a log line with nowhere to go is dropped.
type Writer struct {
	mu     sync.Mutex
	stream io.Writer
	name   string // of stream, for the note in the file
	path   string // the file; "" until SetFile
	file   *os.File
	broken error // why the stream was given up; nil while it works
	lost   int   // lines dropped before the file could take them
}

// New returns a Writer to stream, called name ("stderr") in the note.
func New(stream io.Writer, name string) *Writer {
	return &Writer{stream: stream, name: name}
}

// SetFile names the file the log continues in; until it is set, lines
// the stream refuses are dropped (and counted in the note).
func (w *Writer) SetFile(path string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.file == nil {
		w.path = path
	}
}

// FellBack reports whether the stream was given up.
func (w *Writer) FellBack() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.broken != nil
}

// Write writes p to the stream or, once the stream has failed, the file.
func (w *Writer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.broken == nil {
		_, err := w.stream.Write(p)
		if err == nil {
			return len(p), nil
		}
		w.broken = err
	}
	if f := w.open(); f != nil {
		// A full disk or a removed state dir: nothing better to do.
		_, _ = f.Write(p)
	} else {
		w.lost++
	}
	return len(p), nil
}

// open opens the file on first use and writes the note; nil if there is
// no file (yet) or it cannot be opened. w.mu is held.
func (w *Writer) open() *os.File {
	if w.file != nil || w.path == "" {
		return w.file
	}
	f, err := os.OpenFile(w.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		// Tried once: every later line would fail the same way.
		w.path = ""
		return nil
	}
	note := fmt.Sprintf("%s [WARN]  pid %d: %s failed (%v); the log continues in this file",
		time.Now().Format("2006-01-02T15:04:05.000Z0700"), os.Getpid(), w.name, w.broken)
	if w.lost > 0 {
		note += fmt.Sprintf("; lines lost before it: %d", w.lost)
	}
	_, _ = f.WriteString(note + "\n")
	w.file = f
	return f
}
