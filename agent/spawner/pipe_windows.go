//go:build windows

package spawner

import "os"

func newPipe() (r, w *os.File, err error) { return os.Pipe() }

// copyPipe copies r to c until EOF. A blocking read holds a thread: the
// runtime does not poll pipes here.
func copyPipe(r *os.File, c *copier) {
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			c.write(buf[:n])
		}
		if err != nil {
			return
		}
	}
}

// stopCopy cannot interrupt the read; the pump ends at EOF, once every
// holder of the pipe's write end is gone.
func (p *pump) stopCopy() {}
