//go:build !unix

package logfile

import "os"

// openAppend opens (creating it if needed) a log file for appending.
func openAppend(name string) (*os.File, error) {
	return os.OpenFile(name, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
}
