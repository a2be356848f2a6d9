//go:build linux

package spawner

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/allex-go/allex/agent/logfile"
)

// logFiles returns the sizes of a stream's log files by name.
func logFiles(t *testing.T, spec Spec, stream string) map[string]int64 {
	t.Helper()
	live := LogPath(spec.LogDir, spec.Instance, stream)
	matches, err := filepath.Glob(live + "*")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for _, m := range matches {
		fi, err := os.Stat(m)
		if err != nil {
			t.Fatal(err)
		}
		out[filepath.Base(m)] = fi.Size()
	}
	return out
}

// A child writing as fast as it can keeps at most LogMaxFiles files of
// LogMaxSize bytes, its newest output among them.
func TestFloodIsRotatedWithinTheSpecsLimits(t *testing.T) {
	spec := helperSpec(t, "flood")
	const wrote = 8 << 20
	spec.Env["HELPER_FLOOD_BYTES"] = strconv.Itoa(wrote)
	spec.LogMaxSize, spec.LogMaxFiles = 64<<10, 3
	r := startSupervisor(t, context.Background(), spec, Options{})
	if err := r.wait(t); err != nil {
		t.Fatalf("Run: %v", err)
	}
	files := logFiles(t, spec, "stdout")
	var kept int64
	for name, size := range files {
		kept += size
		if size > spec.LogMaxSize {
			t.Errorf("%s holds %d bytes, over %d", name, size, spec.LogMaxSize)
		}
	}
	if len(files) != 3 || files["h1.log.1"] == 0 || files["h1.log.2"] == 0 {
		t.Errorf("files %v, want h1.log, h1.log.1 and h1.log.2", files)
	}
	if kept*10 > wrote {
		t.Errorf("kept %d of %d bytes", kept, wrote)
	}
	out := readLog(t, spec, "stdout")
	if want := fmt.Sprintf("flood done after %d lines\n", wrote/64); !strings.HasSuffix(out, want) {
		t.Errorf("live log ends with %q, want %q", out[max(len(out)-100, 0):], want)
	}
}

// A restart continues the same files, the old run's last words before the
// new run's header.
func TestRestartContinuesTheLogInOrder(t *testing.T) {
	spec := helperSpec(t, "listen")
	spec.Env["HELPER_LAST_BYTES"] = strconv.Itoa(4 << 20)
	spec.Ports = map[string]uint16{"tcp": freePort(t)}
	spec.Readiness = ReadyPorts
	r := startSupervisor(t, context.Background(), spec, Options{})
	r.rec.waitFor(t, EventReady)
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if err := r.s.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	r.rec.waitFor(t, EventReady)
	if err := r.s.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	out := readLog(t, spec, "stdout")
	var got []string
	for _, l := range strings.Split(out, "\n") {
		switch {
		case strings.HasPrefix(l, "--- allex: start pid"):
			got = append(got, "header")
		case l == "listening" || l == "got SIGTERM":
			got = append(got, l)
		}
	}
	want := "header listening got SIGTERM header listening got SIGTERM"
	if strings.Join(got, " ") != want {
		t.Errorf("log lines %v, want %s:\n%s", got, want, out)
	}
}

// A process that left the child's group holding its stdout keeps neither
// Run nor the log waiting once the group is dead.
func TestEscapedWriterDoesNotHoldTheLog(t *testing.T) {
	spec := helperSpec(t, "escape")
	s, err := New(spec, Options{})
	if err != nil {
		t.Fatal(err)
	}
	s.pumpLimit = time.Hour // only finish can end the pump in time
	errc := make(chan error, 1)
	go func() { errc <- s.Run(context.Background()) }()
	select {
	case err = <-errc:
	case <-time.After(waitLimit):
		t.Fatal("Run still waits on the escaped writer's pipe")
	}
	out := readLog(t, spec, "stdout")
	var pid int
	if _, scanErr := fmt.Sscanf(out[strings.Index(out, "escaped "):], "escaped %d", &pid); scanErr != nil || pid <= 0 {
		t.Fatalf("no grandchild pid in the log: %q", out)
	}
	defer syscall.Kill(pid, syscall.SIGKILL)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
}

// A log that cannot rotate loses the child's output, but the child runs
// on unblocked and the files stay within their limits.
func TestLogFailureNeitherBlocksTheChildNorGrowsTheFile(t *testing.T) {
	spec := helperSpec(t, "flood")
	spec.Env["HELPER_FLOOD_BYTES"] = strconv.Itoa(4 << 20)
	spec.LogMaxSize, spec.LogMaxFiles = logfile.MinSize, 2
	// A non-empty directory where the live file is to be rotated to.
	live := LogPath(spec.LogDir, spec.Instance, "stdout")
	if err := os.MkdirAll(filepath.Join(live+".1", "x"), 0o750); err != nil {
		t.Fatal(err)
	}
	r := startSupervisor(t, context.Background(), spec, Options{})
	if err := r.wait(t); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if st := r.s.Status(); st.ExitCode != 0 {
		t.Errorf("child exited with %d, want 0 (not blocked or killed by its pipe)", st.ExitCode)
	}
	if fi, err := os.Stat(live); err != nil || fi.Size() > spec.LogMaxSize {
		t.Errorf("live log: %v, %v; want at most %d bytes", fi.Size(), err, spec.LogMaxSize)
	}
}

func TestSpecRefusesBadLogLimits(t *testing.T) {
	for _, tt := range []struct {
		size  int64
		files int
		want  string
	}{
		{-1, 0, "log max size: -1 is negative"},
		{100, 0, "log max size: 100 bytes is below the minimum"},
		{0, -1, "log max files: -1 is out of range 1-1000"},
		{0, 1001, "log max files: 1001 is out of range"},
	} {
		spec := helperSpec(t, "env")
		spec.LogMaxSize, spec.LogMaxFiles = tt.size, tt.files
		if _, err := New(spec, Options{}); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("size %d files %d: %v, want %q", tt.size, tt.files, err, tt.want)
		}
	}
	spec, err := helperSpec(t, "env").validate()
	if err != nil || spec.LogMaxSize != logfile.DefaultMaxSize || spec.LogMaxFiles != logfile.DefaultMaxFiles {
		t.Errorf("defaults: %d, %d, %v", spec.LogMaxSize, spec.LogMaxFiles, err)
	}
}

// gatedWriter records writes; those of a header given as gate wait for
// release.
type gatedWriter struct {
	mu      sync.Mutex
	b       strings.Builder
	gate    string
	release chan struct{}
}

func (w *gatedWriter) Write(p []byte) (int, error) {
	if string(p) == w.gate {
		<-w.release
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *gatedWriter) Path() string { return "gated" }

func (w *gatedWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

// filledPipe returns the read end of a pipe holding s, its write end closed.
func filledPipe(t *testing.T, s string) *os.File {
	t.Helper()
	r, w, err := newPipe()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.WriteString(s); err != nil {
		t.Fatal(err)
	}
	w.Close()
	return r
}

// A run's pump writes nothing, header included, until the previous run's
// pump is done. The pumps copy their pipes themselves here: the log
// poller's goroutine outlives any bubble.
func TestPumpWaitsForThePreviousRunsPump(t *testing.T) {
	noLogPoller(t)
	synctest.Test(t, func(t *testing.T) {
		w := &gatedWriter{gate: "first run\n", release: make(chan struct{})}
		log := hclog.NewNullLogger()
		first := startPump(filledPipe(t, "a\n"), w, nil, "first run\n", pumpLimit, log)
		second := startPump(filledPipe(t, "b\n"), w, first, "second run\n", pumpLimit, log)
		synctest.Wait()
		if got := w.String(); got != "" {
			t.Fatalf("the second run's pump wrote %q while the first one's waits", got)
		}
		close(w.release)
		<-second.done
		if got, want := w.String(), "first run\na\nsecond run\nb\n"; got != want {
			t.Errorf("log %q, want %q", got, want)
		}
	})
}
