package logfile

import (
	"errors"
	"io"
	"io/fs"
	"os"
)

// Reader reads a log: the rotated files it was opened with, oldest first,
// then the live file, then every file that takes the live file's place.
// Read returns io.EOF when it has caught up; a later Read returns what was
// written since, so a caller follows the log by reading again. Rotated
// files it never had open (when the log rotated more than once between two
// reads) are skipped, as tail -F skips them.
type Reader struct {
	path  string
	older []*os.File  // to read before live, in order
	live  *os.File    // the file at path when opened; nil when there was none
	fi    fs.FileInfo // live's, to tell when path names another file
}

// maxSwitches bounds the files one Read moves through when it finds no
// data in them.
const maxSwitches = 8

// OpenReader opens the log at path. With tailLines > 0 it starts at the
// last tailLines lines, taken from the live file and, when that holds
// fewer, the newest rotated one; otherwise it starts at the oldest rotated
// file. A log that does not exist yet is not an error: its lines are read
// once it appears.
func OpenReader(path string, tailLines int) (*Reader, error) {
	r := &Reader{path: path}
	// A rotation between the opens shows as a file opened twice; then
	// they are opened again.
	for range 3 {
		if err := r.openAll(tailLines); err != nil {
			r.Close()
			return nil, err
		}
		if !r.sawTwice() {
			break
		}
		r.Close()
		r.older, r.live, r.fi = nil, nil, nil
	}
	if tailLines > 0 {
		return r, r.seekTail(tailLines)
	}
	return r, nil
}

// openAll opens the live file and the rotated ones a read needs, newest
// first, and queues the rotated ones oldest first.
func (r *Reader) openAll(tailLines int) error {
	if err := r.openLive(); err != nil {
		return err
	}
	want := MaxFiles - 1
	if tailLines > 0 {
		want = 1
	}
	for i := 1; i <= want; i++ {
		f, err := os.Open(Rotated(r.path, i))
		if errors.Is(err, fs.ErrNotExist) {
			break
		}
		if err != nil {
			return err
		}
		r.older = append([]*os.File{f}, r.older...)
	}
	return nil
}

// sawTwice reports whether two of the open files are the same file.
func (r *Reader) sawTwice() bool {
	files := append(append([]*os.File(nil), r.older...), r.live)
	var seen []fs.FileInfo
	for _, f := range files {
		if f == nil {
			continue
		}
		fi, err := f.Stat()
		if err != nil {
			continue
		}
		for _, s := range seen {
			if os.SameFile(s, fi) {
				return true
			}
		}
		seen = append(seen, fi)
	}
	return false
}

// seekTail positions the reader at the last n lines.
func (r *Reader) seekTail(n int) error {
	found := 0
	if r.live != nil {
		var err error
		if found, err = seekTail(r.live, n); err != nil {
			return err
		}
	}
	if len(r.older) == 0 {
		return nil
	}
	prev := r.older[len(r.older)-1]
	if found >= n {
		_ = prev.Close()
		r.older = nil
		return nil
	}
	_, err := seekTail(prev, n-found)
	return err
}

// openLive opens the file now at path; none is not an error.
func (r *Reader) openLive() error {
	f, err := os.Open(r.path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	fi, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return err
	}
	r.live, r.fi = f, fi
	return nil
}

// Read reads the next bytes of the log; io.EOF means none for now.
func (r *Reader) Read(p []byte) (int, error) {
	for range maxSwitches {
		if len(r.older) > 0 {
			n, err := r.older[0].Read(p)
			if n > 0 || (err != nil && err != io.EOF) {
				return n, err
			}
			_ = r.older[0].Close()
			r.older = r.older[1:]
			continue
		}
		if r.live == nil {
			if err := r.openLive(); err != nil || r.live == nil {
				return 0, eof(err)
			}
		}
		n, err := r.live.Read(p)
		if n > 0 || (err != nil && err != io.EOF) {
			return n, err
		}
		if !r.replaced() {
			return 0, io.EOF
		}
		// Nothing is written to a file after it is renamed away, but
		// its last writes may have come after the read above: it is
		// read to its end before the new one.
		r.older = append(r.older, r.live)
		r.live, r.fi = nil, nil
	}
	return 0, io.EOF
}

func eof(err error) error {
	if err != nil {
		return err
	}
	return io.EOF
}

// replaced reports whether path no longer names the live file.
func (r *Reader) replaced() bool {
	fi, err := os.Stat(r.path)
	if err != nil {
		return errors.Is(err, fs.ErrNotExist)
	}
	return !os.SameFile(fi, r.fi)
}

// Pending returns how many bytes the log holds past where the reader is,
// the file that took the live file's place included: what it reads before
// it catches up, unless more is written.
func (r *Reader) Pending() (int64, error) {
	var n int64
	for _, f := range append(append([]*os.File(nil), r.older...), r.live) {
		if f == nil {
			continue
		}
		pos, err := f.Seek(0, io.SeekCurrent)
		if err != nil {
			return 0, err
		}
		fi, err := f.Stat()
		if err != nil {
			return 0, err
		}
		n += max(fi.Size()-pos, 0)
	}
	fi, err := os.Stat(r.path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			err = nil
		}
		return n, err
	}
	if r.live == nil || !os.SameFile(fi, r.fi) {
		n += fi.Size()
	}
	return n, nil
}

// Close closes the files the reader holds.
func (r *Reader) Close() error {
	var errs []error
	for _, f := range r.older {
		errs = append(errs, f.Close())
	}
	if r.live != nil {
		errs = append(errs, r.live.Close())
	}
	return errors.Join(errs...)
}

// seekTail positions f at the start of its last n lines, or at its start
// when it holds fewer; it returns how many lines it found (n at most). A
// newline that ends the file does not start a line.
func seekTail(f *os.File, n int) (int, error) {
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	size := fi.Size()
	const block = 8 << 10
	buf := make([]byte, block)
	lines := 0
	pos := size
	for pos > 0 {
		step := min(int64(block), pos)
		pos -= step
		if _, err := f.ReadAt(buf[:step], pos); err != nil && err != io.EOF {
			return 0, err
		}
		for i := int(step) - 1; i >= 0; i-- {
			if buf[i] != '\n' || pos+int64(i) == size-1 {
				continue
			}
			lines++
			if lines == n {
				_, err := f.Seek(pos+int64(i)+1, io.SeekStart)
				return n, err
			}
		}
	}
	if size > 0 {
		lines++
	}
	_, err = f.Seek(0, io.SeekStart)
	return lines, err
}
