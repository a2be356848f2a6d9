//go:build unix

package spawner

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// helperEnv selects what TestHelperProcess does when the test binary runs
// as a supervised child.
const helperEnv = "ALLEX_SPAWNER_HELPER"

// helperLife bounds every helper so a crashed test leaves nothing running long.
const helperLife = 60 * time.Second

// TestHelperProcess is not a test: it is the child process of the other
// tests, selected by $ALLEX_SPAWNER_HELPER.
func TestHelperProcess(t *testing.T) {
	behaviour := os.Getenv(helperEnv)
	if behaviour == "" {
		t.Skip("only runs as a child process")
	}
	os.Exit(helperMain(behaviour))
}

func helperMain(behaviour string) int {
	switch behaviour {
	case "env":
		for _, k := range []string{"ALLEX_MODULE", "ALLEX_INSTANCE", "ALLEX_TCP_PORT", "ALLEX_HTTP_PORT", "ALLEX_WS_PORT",
			"ALLEX_PORTS", "ALLEX_MASTER_SOCKET", "CUSTOM", "FROM_MASTER"} {
			v, ok := os.LookupEnv(k)
			if !ok {
				v = "<unset>"
			}
			fmt.Printf("%s=%s\n", k, v)
		}
		fmt.Printf("ARGS=%s\n", strings.Join(helperArgs(), "|"))
		wd, _ := os.Getwd()
		fmt.Printf("PWD=%s\n", wd)
		fmt.Fprintln(os.Stderr, "hello on stderr")
		return 0
	case "stdin":
		b, err := io.ReadAll(os.Stdin)
		fmt.Printf("STDIN=%d %v\n", len(b), err)
		return 0
	case "exit":
		code, _ := strconv.Atoi(os.Getenv("HELPER_EXIT_CODE"))
		return code
	case "sleep":
		fmt.Println("sleeping")
		time.Sleep(helperLife)
		return 0
	case "ignoreterm":
		signal.Ignore(syscall.SIGTERM)
		fmt.Println("ignoring SIGTERM")
		time.Sleep(helperLife)
		return 0
	case "listen":
		sigs := make(chan os.Signal, 1)
		signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
		if d, err := time.ParseDuration(os.Getenv("HELPER_LISTEN_AFTER")); err == nil {
			time.Sleep(d)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:"+os.Getenv("ALLEX_TCP_PORT"))
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 7
		}
		defer ln.Close()
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				_ = c.Close()
			}
		}()
		fmt.Println("listening")
		select {
		case sig := <-sigs:
			// Last words long enough to still be in the pipe when
			// the next run starts.
			if n, _ := strconv.Atoi(os.Getenv("HELPER_LAST_BYTES")); n > 0 {
				fmt.Print(strings.Repeat(strings.Repeat("z", 63)+"\n", n/64))
			}
			fmt.Println("got " + sigName(sig))
		case <-time.After(helperLife):
		}
		return 0
	case "flood":
		// Numbered lines of 64 bytes, written 8 KiB at a time, as fast
		// as the pipe takes them.
		total, _ := strconv.Atoi(os.Getenv("HELPER_FLOOD_BYTES"))
		w := bufio.NewWriterSize(os.Stdout, 8<<10)
		lines := (total + 63) / 64
		for i := range lines {
			fmt.Fprintf(w, "flood %09d %s\n", i, strings.Repeat("y", 47))
		}
		fmt.Fprintf(w, "flood done after %d lines\n", lines)
		if err := w.Flush(); err != nil {
			return 7
		}
		return 0
	case "escape":
		// A grandchild in a session of its own keeps the stdout pipe.
		exe, _ := os.Executable()
		gc := exec.Command(exe, "-test.run=^TestHelperProcess$")
		gc.Env = append(os.Environ(), helperEnv+"=sleep")
		gc.Stdout = os.Stdout
		gc.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		if err := gc.Start(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 7
		}
		fmt.Printf("escaped %d\n", gc.Process.Pid)
		return 0
	case "grandchild":
		exe, _ := os.Executable()
		gc := exec.Command(exe, "-test.run=^TestHelperProcess$")
		gc.Env = append(os.Environ(), helperEnv+"=ignoreterm")
		out, err := gc.StdoutPipe()
		if err == nil {
			err = gc.Start()
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 7
		}
		// Only report the grandchild once it ignores SIGTERM, so the test
		// knows the group SIGKILL is what ends it.
		line, err := bufio.NewReader(out).ReadString('\n')
		if err != nil || !strings.Contains(line, "ignoring") {
			fmt.Fprintln(os.Stderr, "grandchild:", line, err)
			return 7
		}
		fmt.Printf("grandchild %d\n", gc.Process.Pid)
		time.Sleep(helperLife)
		return 0
	}
	fmt.Fprintf(os.Stderr, "unknown behaviour %q\n", behaviour)
	return 9
}

func sigName(sig os.Signal) string {
	switch sig {
	case syscall.SIGTERM:
		return "SIGTERM"
	case syscall.SIGINT:
		return "SIGINT"
	}
	return sig.String()
}

func helperArgs() []string {
	for i, a := range os.Args {
		if a == "--" {
			return os.Args[i+1:]
		}
	}
	return nil
}

// helperSpec returns a spec that runs this test binary as a child with the
// given behaviour, with generous timeouts for a loaded machine.
func helperSpec(t testing.TB, behaviour string) Spec {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return Spec{
		Module:       "helper",
		Instance:     "h1",
		Command:      exe,
		Args:         []string{"-test.run=^TestHelperProcess$", "--"},
		Env:          map[string]string{helperEnv: behaviour},
		Restart:      PolicyNever,
		StartTimeout: 60 * time.Second,
		StopTimeout:  20 * time.Second,
		LogDir:       t.TempDir(),
	}
}

// freePort finds a port free right now by letting the kernel pick one.
func freePort(t testing.TB) uint16 {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return uint16(ln.Addr().(*net.TCPAddr).Port)
}

// recorder collects events and lets a test wait for one kind.
type recorder struct {
	mu  sync.Mutex
	evs []Event
	ch  chan Event
}

func newRecorder() *recorder { return &recorder{ch: make(chan Event, 1000)} }

func (r *recorder) on(ev Event) {
	r.mu.Lock()
	r.evs = append(r.evs, ev)
	r.mu.Unlock()
	select {
	case r.ch <- ev:
	default:
	}
}

func (r *recorder) events() []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Event(nil), r.evs...)
}

func (r *recorder) count(k EventKind) int {
	n := 0
	for _, ev := range r.events() {
		if ev.Kind == k {
			n++
		}
	}
	return n
}

func (r *recorder) kinds() []string {
	var ks []string
	for _, ev := range r.events() {
		ks = append(ks, ev.Kind.String())
	}
	return ks
}

func (r *recorder) waitFor(t testing.TB, k EventKind) Event {
	t.Helper()
	timer := time.NewTimer(waitLimit)
	defer timer.Stop()
	for {
		select {
		case ev := <-r.ch:
			if ev.Kind == k {
				return ev
			}
		case <-timer.C:
			t.Fatalf("no %v event within %v; got %v", k, waitLimit, r.kinds())
		}
	}
}

// running is a supervisor whose Run is going on in the background.
type running struct {
	s    *Supervisor
	rec  *recorder
	errc chan error
}

func startSupervisor(t testing.TB, ctx context.Context, spec Spec, opts Options) *running {
	t.Helper()
	rec := newRecorder()
	opts.OnEvent = rec.on
	s, err := New(spec, opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	r := &running{s: s, rec: rec, errc: make(chan error, 1)}
	go func() { r.errc <- s.Run(ctx) }()
	t.Cleanup(func() {
		stopCtx, cancel := context.WithTimeout(context.Background(), waitLimit)
		defer cancel()
		if err := s.Stop(stopCtx); err != nil {
			t.Errorf("cleanup stop: %v", err)
		}
	})
	return r
}

func (r *running) wait(t testing.TB) error {
	t.Helper()
	select {
	case err := <-r.errc:
		return err
	case <-time.After(waitLimit):
		t.Fatalf("Run did not return within %v; events %v", waitLimit, r.rec.kinds())
	}
	return nil
}

// pollUntil retries cond every 20ms until it holds or the limit passes.
func pollUntil(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not true within %v", what, waitLimit)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func readLog(t testing.TB, spec Spec, stream string) string {
	t.Helper()
	b, err := os.ReadFile(LogPath(spec.LogDir, spec.Instance, stream))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
