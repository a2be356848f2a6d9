//go:build linux

package main

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/allex-go/allex/internal/procfs"
)

// TestQuickAllex runs the allex part of the command in -quick mode, so CI
// exercises its whole code path (build, LAN manager, master, needs, kills,
// idle sampling, report) without installing the peers.
func TestQuickAllex(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs allexmaster and allexlanmanager")
	}
	// Two rounds: the kills are split between them and the starts are
	// reported as a median with the rounds' values under the table.
	md := runReport(t, 3*time.Minute, "-quick", "-only", "allex", "-kills", "3", "-rounds", "2", "-idle", "1s")
	wantAll(t, md, []string{
		"| metric | allex |",
		"(a) start N=20: all ready (allex: all published), median of 2 |",
		"(b) kill -9 → accepting again, p99 of 3",
		"- allex (a) all ready, ms, round by round: N=1: ",
		"(c) supervisor RSS, idle with 20 children",
		"(c) supervisor memory (PSS), idle with 20 children",
		"allexlanmanager PSS",
		"kill -9 breakdown",
		"- allex (b) slowest kills: ",
		" ms (round 1, kill 1; spawned at ",
		"- child: ",
		" -rounds 2 -idle 1s -child c -fs ",
		"- files: ",
		// Without the peers nothing is gated (and the run ends without
		// an error: runReport checks).
		"| (a) start N=20, all published: allex/pm2 | – | ≤ 0.20 | not run: pm2 not in this run |",
		"| (c) supervisor memory (PSS) idle with 500 children (allex: master and keeper) | – | ≤ 30 MB | not run: idle measured with 20 children |",
	})
	// The C child by default, unless there is no C compiler.
	if _, err := findCC(); err == nil && !strings.Contains(md, "- child: C (bench/tinysrv-c/tinysrv.c), built with `") {
		t.Errorf("results do not say the C child ran:\n%s", md)
	}
	wantMeasured(t, md, "")
}

// runReport runs the command with args, writing to a temp file, and
// returns the Markdown it wrote.
func runReport(t *testing.T, timeout time.Duration, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	out := filepath.Join(t.TempDir(), "results.md")
	var stdout bytes.Buffer
	if err := runBench(ctx, append(args, "-out", out), &stdout); err != nil {
		t.Fatalf("bench: %v\n%s", err, stdout.String())
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// wantAll fails the test for each of wants that md lacks.
func wantAll(t *testing.T, md string, wants []string) {
	t.Helper()
	for _, want := range wants {
		if !strings.Contains(md, want) {
			t.Errorf("results lack %q:\n%s", want, md)
		}
	}
}

// wantMeasured fails the test for each metric row left unmeasured ("–"),
// but for rows that name except (when not empty). The gates, which are
// not run without the peers, come after the metrics.
func wantMeasured(t *testing.T, md, except string) {
	t.Helper()
	metrics, _, _ := strings.Cut(md, "\n## Gates\n")
	for _, l := range strings.Split(metrics, "\n") {
		if strings.HasPrefix(l, "| (") && strings.Contains(l, "–") && (except == "" || !strings.Contains(l, except)) {
			t.Errorf("unmeasured row: %s", l)
		}
	}
}

func TestParseFlags(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		wantErr bool
		ns      string
		rounds  int    // 0 means 3
		child   string // "" means c
		fs      string // "" means fresh
	}{
		{args: nil, ns: "1,100,500"},
		{args: []string{"-child", "go"}, ns: "1,100,500", child: "go"},
		{args: []string{"-child", "c", "-quick"}, ns: "1,20", rounds: 1},
		{args: []string{"-child", "rust"}, wantErr: true},
		{args: []string{"-quick"}, ns: "1,20", rounds: 1},
		{args: []string{"-quick", "-n", "5"}, ns: "5", rounds: 1},
		{args: []string{"-quick", "-rounds", "2"}, ns: "1,20", rounds: 2},
		{args: []string{"-rounds", "0"}, wantErr: true},
		{args: []string{"-rounds", "21"}, wantErr: true},
		{args: []string{"-n", "3, 7"}, ns: "3,7"},
		{args: []string{"-n", "0"}, wantErr: true},
		{args: []string{"-n", "x"}, wantErr: true},
		{args: []string{"-only", "systemd"}, wantErr: true},
		{args: []string{"-kills", "-1"}, wantErr: true},
		{args: []string{"-idle", "0s"}, wantErr: true},
		{args: []string{"extra"}, wantErr: true},
		{args: []string{"-fs", "tmp"}, ns: "1,100,500", fs: "tmp"},
		{args: []string{"-fs", "fresh"}, ns: "1,100,500"},
		{args: []string{"-fs", "tmpfs"}, wantErr: true},
	} {
		o, err := parseFlags(tc.args, &bytes.Buffer{})
		if (err != nil) != tc.wantErr {
			t.Errorf("%q: err %v, want error %v", tc.args, err, tc.wantErr)
			continue
		}
		if err != nil {
			continue
		}
		if joinInts(o.ns) != tc.ns {
			t.Errorf("%q: ns %s, want %s", tc.args, joinInts(o.ns), tc.ns)
		}
		if want := cmp.Or(tc.rounds, 3); o.rounds != want {
			t.Errorf("%q: rounds %d, want %d", tc.args, o.rounds, want)
		}
		if want := cmp.Or(tc.child, "c"); o.child != want {
			t.Errorf("%q: child %q, want %q", tc.args, o.child, want)
		}
		if want := cmp.Or(tc.fs, "fresh"); o.fs != want {
			t.Errorf("%q: fs %q, want %q", tc.args, o.fs, want)
		}
	}
}

func TestPercentile(t *testing.T) {
	ds := make([]time.Duration, 100)
	for i := range ds {
		ds[len(ds)-1-i] = time.Duration(i+1) * time.Millisecond
	}
	for _, tc := range []struct {
		p    float64
		want time.Duration
	}{{50, 50 * time.Millisecond}, {99, 99 * time.Millisecond}, {100, 100 * time.Millisecond}, {0, time.Millisecond}} {
		if got := percentile(ds, tc.p); got != tc.want {
			t.Errorf("p%v = %v, want %v", tc.p, got, tc.want)
		}
	}
	if got := percentile(nil, 50); got != 0 {
		t.Errorf("empty: %v", got)
	}
}

func TestProcStats(t *testing.T) {
	pid := os.Getpid()
	if kb, err := rssKB(pid); err != nil || kb <= 0 {
		t.Errorf("rssKB = %d, %v", kb, err)
	}
	if _, err := procfs.CPUTicks(pid); err != nil {
		t.Errorf("cpuTicks: %v", err)
	}
}

// TestAwaitConnect: after a connect that returned early (EINTR there, a
// non-blocking connect here), awaitConnect reports how the connection
// attempt ended: accepted by a listener, refused by a closed port.
func TestAwaitConnect(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	open := ln.Addr().(*net.TCPAddr).Port
	closedLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := closedLn.Addr().(*net.TCPAddr).Port
	closedLn.Close()
	defer ln.Close()
	for _, tc := range []struct {
		port int
		want error
	}{{open, nil}, {closed, unix.ECONNREFUSED}} {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		err = unix.Connect(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}, Port: tc.port})
		if err == nil || errors.Is(err, unix.EINPROGRESS) {
			err = awaitConnect(fd, time.Second)
		}
		unix.Close(fd)
		if !errors.Is(err, tc.want) && !(tc.want == nil && err == nil) {
			t.Errorf("port %d: %v, want %v", tc.port, err, tc.want)
		}
	}
}

func TestKillsIn(t *testing.T) {
	for _, tc := range []struct {
		kills, rounds int
		want          []int
	}{
		{100, 3, []int{34, 33, 33}},
		{3, 2, []int{2, 1}},
		{2, 3, []int{1, 1, 0}},
		{0, 2, []int{0, 0}},
		{10, 1, []int{10}},
	} {
		o := &options{kills: tc.kills, rounds: tc.rounds}
		var got []int
		for r := range tc.rounds {
			got = append(got, o.killsIn(r))
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("%d kills over %d rounds: %v, want %v", tc.kills, tc.rounds, got, tc.want)
		}
	}
}

func TestSlowestKills(t *testing.T) {
	ms := func(f float64) time.Duration { return time.Duration(f * float64(time.Millisecond)) }
	r := &result{
		kills:  []time.Duration{ms(1.5), ms(9.2), ms(1.6), ms(3.1), ms(3.1)},
		killAt: []killPlace{{round: 1, nth: 1}, {round: 1, nth: 2}, {round: 2, nth: 1}, {round: 2, nth: 2}, {round: 3, nth: 1}},
	}
	for _, tc := range []struct {
		k    int
		want string
	}{
		{1, "9.2 ms (round 1, kill 2)"},
		// Equal times keep the order they were made in.
		{3, "9.2 ms (round 1, kill 2), 3.1 ms (round 2, kill 2), 3.1 ms (round 3, kill 1)"},
		{9, "9.2 ms (round 1, kill 2), 3.1 ms (round 2, kill 2), 3.1 ms (round 3, kill 1), 1.6 ms (round 2, kill 1), 1.5 ms (round 1, kill 1)"},
	} {
		if got := r.slowestKills(tc.k); got != tc.want {
			t.Errorf("slowestKills(%d) = %q, want %q", tc.k, got, tc.want)
		}
	}
	// A system's own note goes with its kill; an empty one adds nothing.
	r.killAt[1].note, r.killAt[4].note = "spawned at 7.0 ms", "x"
	if got, want := r.slowestKills(3), "9.2 ms (round 1, kill 2; spawned at 7.0 ms), 3.1 ms (round 2, kill 2), 3.1 ms (round 3, kill 1; x)"; got != want {
		t.Errorf("with notes: slowestKills(3) = %q, want %q", got, want)
	}
}

// pidServer answers every connection on ln with pid, as tinysrv does.
func pidServer(ln net.Listener, pid string) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		c.Write([]byte(pid + "\n"))
		c.Close()
	}
}

// TestProberWaitNewPID: the prober finds a replacement that starts
// listening on the port some time after the old process is gone, with
// the socket table probe and with connects, and gives up at its timeout
// when no replacement comes.
func TestProberWaitNewPID(t *testing.T) {
	socketTable := newProber()
	defer socketTable.close()
	if socketTable.listen == nil {
		t.Logf("no sock_diag here (%s): the connect prober is tested twice", socketTable.note)
	}
	for _, tc := range []struct {
		name string
		p    *prober
	}{
		{"socket table", socketTable},
		{"connect", &prober{poll: killPollConnect}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			old, err := net.Listen("tcp4", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			address := old.Addr().String()
			go pidServer(old, "100")
			if pid, err := tc.p.waitNewPID(context.Background(), address, 99, time.Second); err != nil || pid != 100 {
				t.Fatalf("running server: pid %d, %v; want 100", pid, err)
			}
			old.Close()
			// Nothing listens: the wait ends at its timeout, with an error.
			if pid, err := tc.p.waitNewPID(context.Background(), address, 100, 20*time.Millisecond); err == nil {
				t.Fatalf("no server: pid %d, want an error", pid)
			}
			// The replacement comes up on the same port while the prober waits.
			go func() {
				time.Sleep(20 * time.Millisecond)
				ln, err := net.Listen("tcp4", address)
				if err != nil {
					t.Errorf("replacement: %v", err)
					return
				}
				t.Cleanup(func() { ln.Close() })
				go pidServer(ln, "101")
			}()
			if pid, err := tc.p.waitNewPID(context.Background(), address, 100, 5*time.Second); err != nil || pid != 101 {
				t.Fatalf("replacement: pid %d, %v; want 101", pid, err)
			}
		})
	}
}
