//go:build unix && !linux

package spawner

import "os"

// pipeSize is the largest a pipe's capacity gets: the kernel's own.
const pipeSize = 64 << 10

// newPipe returns a pipe whose read end the runtime poller waits on and
// whose write end, for the child, blocks as a file or terminal would.
func newPipe() (r, w *os.File, err error) {
	r, w, err = os.Pipe()
	if err != nil {
		return nil, nil, err
	}
	w.Fd() // puts it back in blocking mode
	return r, w, nil
}

func growPipe(int) {}
