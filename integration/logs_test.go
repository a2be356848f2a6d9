//go:build !windows

package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	allexv1 "github.com/allex-go/allex/gen/allex/v1"
	"github.com/allex-go/allex/internal/e2e"
)

// logSizes returns the sizes of an instance's stdout log files by name.
func logSizes(t *testing.T, m *e2e.Master, instance string) map[string]int64 {
	t.Helper()
	matches, err := filepath.Glob(filepath.Join(m.Dir, "state", "logs", "stdout", instance+".log*"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for _, p := range matches {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		out[filepath.Base(p)] = fi.Size()
	}
	return out
}

// A child writing as fast as it can keeps logmaxfiles files of at most
// logmaxsize bytes (the module's size, the master's count), and its
// logs stay readable once it has exited and been removed.
func TestLogsOfAFloodAreBounded(t *testing.T) {
	const wrote = 32 << 20
	module := fmt.Sprintf(`,"logmaxfiles":3,"modules":{"flood":{"command":%q,"restart":"never","logmaxsize":"1MiB",`+
		`"env":{"ALLEX_TEST_HELPER":"flood","ALLEX_TEST_BYTES":"%d"}}}`, os.Args[0], wrote)
	m := e2e.StartMaster(t, 10, module)
	e2e.MustCtl(t, m.Socket, "start", "-module", "flood", "flood1")
	m.WaitState(t, "flood1", allexv1.ProcessState_PROCESS_STATE_EXITED)

	sizes := logSizes(t, m, "flood1")
	var kept int64
	for name, size := range sizes {
		kept += size
		if size > 1<<20 {
			t.Errorf("%s holds %d bytes, over logmaxsize", name, size)
		}
	}
	if len(sizes) != 3 || sizes["flood1.log.1"] == 0 || sizes["flood1.log.2"] == 0 {
		t.Errorf("log files %v, want flood1.log, .1 and .2", sizes)
	}
	if kept > 3<<20 || kept*8 > wrote {
		t.Errorf("kept %d bytes of the %d the child wrote", kept, wrote)
	}
	last := fmt.Sprintf("flood done after %d lines", wrote/64)
	if out := e2e.MustCtl(t, m.Socket, "logs", "-n", "1", "-stream", "stdout", "flood1"); strings.TrimSpace(out) != last {
		t.Errorf("logs -n 1 of the exited child = %q, want %q", out, last)
	}
	e2e.MustCtl(t, m.Socket, "stop", "-rm", "flood1")
	out, errOut, err := e2e.Ctl(t, m.Socket, "logs", "flood1")
	if err != nil {
		t.Fatalf("logs of the removed child: %v, %s", err, errOut)
	}
	if !strings.HasSuffix(out, last+"\n") || !strings.Contains(errOut, fmt.Sprintf("flood wrote %d bytes", wrote)) {
		t.Errorf("logs of the removed child lack its last lines:\n%s\nstderr:\n%s", out[max(len(out)-300, 0):], errOut)
	}
	if int64(len(out)) != kept {
		t.Errorf("logs sent %d bytes of stdout, want the %d kept", len(out), kept)
	}
}

// allexctl logs -f follows the log across rotations, losing and
// repeating nothing: the child writes bursts smaller than a file, each
// once the follower has shown the last, so no file rotates away unseen.
func TestLogsFollowAcrossRotations(t *testing.T) {
	const bursts, lines = 5, 11000 // 704 KB a burst, files of 1 MiB
	m := e2e.StartMaster(t, 10, "")
	gate := t.TempDir()
	m.StartHelper(t, "bursts", "bursts", "-log-max-size", "1MiB", "-log-max-files", "2", "-restart", "never",
		"-env", "ALLEX_TEST_GATE="+gate, "-env", "ALLEX_TEST_BURSTS="+strconv.Itoa(bursts), "-env", "ALLEX_TEST_LINES="+strconv.Itoa(lines))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	follow := exec.CommandContext(ctx, e2e.Bins.Ctl, "-socket", m.Socket, "logs", "-f", "-n", "1", "-stream", "stdout", "bursts")
	var out syncBuffer
	follow.Stdout = &out
	if err := follow.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- follow.Wait() }()
	e2e.Eventually(t, time.Minute, func() error {
		if !strings.Contains(out.String(), "helper bursts pid") {
			return fmt.Errorf("follower shows %q", out.String())
		}
		return nil
	})
	for k := range bursts {
		e2e.WriteFile(t, gate, "go."+strconv.Itoa(k), "")
		end := fmt.Sprintf("end of burst %d\n", k)
		e2e.Eventually(t, time.Minute, func() error {
			if !strings.Contains(out.String(), end) {
				return fmt.Errorf("follower lacks %q", end)
			}
			return nil
		})
	}
	e2e.MustCtl(t, m.Socket, "stop", "bursts")
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("logs -f: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("logs -f did not end after the child stopped")
	}
	next := 0
	for _, l := range strings.Split(out.String(), "\n") {
		var i int
		if _, err := fmt.Sscanf(l, "line %d", &i); err != nil {
			continue
		}
		if i != next {
			t.Fatalf("followed line %d after line %d", i, next-1)
		}
		next++
	}
	if next != bursts*lines {
		t.Errorf("followed %d lines, want %d", next, bursts*lines)
	}
	if sizes := logSizes(t, m, "bursts"); len(sizes) != 2 {
		t.Errorf("log files %v, want the live one and one rotated", sizes)
	}
}

// Bad log limits are refused with the field named: by allexctl, by the
// master over gRPC, and in the config file, which the master then does
// not start with.
func TestBadLogLimitsAreRefused(t *testing.T) {
	m := e2e.StartMaster(t, 10, "")
	for _, tt := range []struct {
		flags []string
		want  string
	}{
		{[]string{"-log-max-size", "10MB"}, `start: -log-max-size: "10MB" is not a size`},
		{[]string{"-log-max-size", "100"}, "start: -log-max-size: 100 bytes is below the minimum of 4096"},
		{[]string{"-log-max-files", "-1"}, "start: -log-max-files: -1 is out of range 1-1000"},
	} {
		args := append(append([]string{"start"}, tt.flags...), "bad", "--", "true")
		if _, errOut, err := e2e.Ctl(t, m.Socket, args...); err == nil || !strings.Contains(errOut, tt.want) {
			t.Errorf("allexctl %v: %v, %q; want %q", tt.flags, err, errOut, tt.want)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := e2e.Client(t, m.Socket).StartProcess(ctx, &allexv1.StartProcessRequest{Spec: &allexv1.ModuleSpec{
		Module: "x", Instance: "bad", Command: "true", LogMaxFiles: 5000}})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "log_max_files: 5000 is out of range") {
		t.Errorf("StartProcess with 5000 log files: %v", err)
	}

	dir := e2e.ShortDir(t)
	e2e.WriteFile(t, dir, "allexmasterconfig.json", e2e.MasterConfig(dir, e2e.FreeBlock(t, 30), 10, `,"logmaxsize":"10MB"`))
	p := e2e.Start(t, dir, e2e.Bins.Master)
	if err := p.Wait(30 * time.Second); err == nil {
		t.Fatal("master started with logmaxsize 10MB")
	}
	if want := `logmaxsize: "10MB" is not a size`; !strings.Contains(p.Output(), want) {
		t.Errorf("master output lacks %q:\n%s", want, p.Output())
	}
}
