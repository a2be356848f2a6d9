package logfile

import "fmt"

// Limits of a stream's log; the zero value of a setting means its default.
const (
	DefaultMaxSize  = 10 << 20
	DefaultMaxFiles = 5
	// MinSize refuses sizes that would rotate at every few writes, most
	// likely a unit left out ("100" meant as MiB).
	MinSize = 4 << 10
	// MaxFiles bounds the rename chain of a rotation and the files a
	// Reader looks for.
	MaxFiles = 1000
)

// CheckSize says why n is not a valid maximum log size; 0 (the default)
// is valid.
func CheckSize(n int64) error {
	switch {
	case n < 0:
		return fmt.Errorf("%d is negative", n)
	case n > 0 && n < MinSize:
		return fmt.Errorf("%d bytes is below the minimum of %d (4KiB); a plain number is bytes, write e.g. \"10MiB\"", n, MinSize)
	}
	return nil
}

// CheckFiles says why n is not a valid number of files per stream; 0 (the
// default) is valid.
func CheckFiles(n int) error {
	if n < 0 || n > MaxFiles {
		return fmt.Errorf("%d is out of range 1-%d (the live file counts)", n, MaxFiles)
	}
	return nil
}
