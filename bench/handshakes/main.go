//go:build linux

// Command handshakes measures how many new TLS connections a real
// allexlanmanager accepts per second, as masters reconnecting at once
// would make them: each connection makes a full TLS 1.3 handshake (no
// session resumption) showing a master's certificate, asks GET /healthz
// and closes. -workers connections are under way at any time, for
// -duration per round; rounds alternate with plain TCP connections to a
// LAN manager run with -insecure, the floor. It prints connections per
// second, the LAN manager's CPU per connection, and the steal.
//
//	go run ./bench/handshakes                      # 3 rounds of 5s, 16 workers
//	go run ./bench/handshakes -rounds 5 -workers 64
package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/allex-go/allex/agent/lancreds"
	"github.com/allex-go/allex/internal/procfs"
	"github.com/allex-go/allex/lanmanager/adminapi"
	"github.com/allex-go/allex/lanmanager/adminclient"
	"github.com/allex-go/allex/lanpki"
)

type options struct {
	rounds, workers int
	duration        time.Duration
	cpu             int
}

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "handshakes:", err)
		}
		os.Exit(1)
	}
}

func run(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("handshakes", flag.ContinueOnError)
	var o options
	fs.IntVar(&o.rounds, "rounds", 3, "rounds of each kind, alternated")
	fs.IntVar(&o.workers, "workers", 16, "connections under way at once")
	fs.DurationVar(&o.duration, "duration", 5*time.Second, "length of a round")
	fs.IntVar(&o.cpu, "cpu", 1, "the CPU the LAN manager is pinned to (-1: not pinned); the clients run on the others")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if o.rounds < 1 || o.workers < 1 || o.duration <= 0 || o.duration > time.Minute {
		return errors.New("want -rounds ≥ 1, -workers ≥ 1 and 0 < -duration ≤ 1m")
	}
	dir, err := os.MkdirTemp("", "handshakes")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "allexlanmanager")
	if b, err := exec.Command("go", "build", "-o", bin, "github.com/allex-go/allex/cmd/allexlanmanager").CombinedOutput(); err != nil {
		return fmt.Errorf("build: %v\n%s", err, b)
	}
	tlsLM, err := startLM(bin, filepath.Join(dir, "tls"), o.cpu, false)
	if err != nil {
		return err
	}
	defer tlsLM.stop()
	plainLM, err := startLM(bin, filepath.Join(dir, "plain"), o.cpu, true)
	if err != nil {
		return err
	}
	defer plainLM.stop()
	cfg, err := masterTLS(tlsLM)
	if err != nil {
		return err
	}
	var tlsRes, plainRes []result
	for r := 0; r < o.rounds; r++ {
		tr := round(tlsLM, o, func() (net.Conn, error) { return tls.Dial("tcp", tlsLM.addr, cfg.Clone()) })
		pr := round(plainLM, o, func() (net.Conn, error) { return net.Dial("tcp", plainLM.addr) })
		fmt.Fprintf(out, "round %d: TLS %s; plain %s\n", r+1, tr, pr)
		tlsRes, plainRes = append(tlsRes, tr), append(plainRes, pr)
	}
	t, p := median(tlsRes), median(plainRes)
	fmt.Fprintf(out, "\nmedian of %d rounds, %d workers, LAN manager on CPU %d:\n", o.rounds, o.workers, o.cpu)
	fmt.Fprintf(out, "  TLS 1.3 + master certificate: %.0f connections/s, %.0f µs of LAN manager CPU each\n", t.rate, t.cpuPer)
	fmt.Fprintf(out, "  plain TCP (-insecure):        %.0f connections/s, %.0f µs each\n", p.rate, p.cpuPer)
	fmt.Fprintf(out, "  ratio TLS/plain: %.2f\n", t.rate/p.rate)
	return nil
}

type lm struct {
	cmd       *exec.Cmd
	addr, dir string
	token     string
}

func (l *lm) stop() { _ = l.cmd.Process.Kill(); _ = l.cmd.Wait() }

func startLM(bin, dir string, cpu int, insecure bool) (*lm, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := ln.Addr().String()
	ln.Close()
	args := []string{"-addr", addr, "-data", dir, "-token", "bench-token", "-log-level", "warn"}
	if insecure {
		args = append(args, "-insecure")
	}
	name := bin
	if cpu >= 0 {
		args = append([]string{"-c", fmt.Sprint(cpu), bin}, args...)
		name = "taskset"
	}
	cmd := exec.Command(name, args...)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	l := &lm{cmd: cmd, addr: addr, dir: dir, token: "bench-token"}
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return l, nil
		}
	}
	l.stop()
	return nil, errors.New("the LAN manager did not listen within 30s")
}

// masterTLS joins as a master, as one does, and returns a configuration
// that shows its certificate and makes a full handshake every time.
func masterTLS(l *lm) (*tls.Config, error) {
	caPEM, err := os.ReadFile(filepath.Join(l.dir, "tls", "ca.crt"))
	if err != nil {
		return nil, err
	}
	ca, err := lanpki.ParseCertPEM(caPEM)
	if err != nil {
		return nil, err
	}
	admin := adminclient.New("https://"+l.addr, "K10"+strings.TrimPrefix(lanpki.Fingerprint(ca), "sha256:")+"::"+l.token)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	made, err := admin.CreateToken(ctx, adminapi.RoleMaster, time.Hour, "handshake bench")
	if err != nil {
		return nil, err
	}
	tok, err := lanpki.ParseToken(made.Token)
	if err != nil {
		return nil, err
	}
	cert, _, err := lancreds.Join(ctx, "https://"+l.addr, tok, "bench", nil)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	// No ClientSessionCache: every connection makes a full handshake.
	return lanpki.ClientConfig(pool, &cert), nil
}

type result struct {
	conns  int
	rate   float64 // connections/s
	cpuPer float64 // µs of LAN manager CPU per connection
	steal  float64 // ms
	errs   int
}

func (r result) String() string {
	return fmt.Sprintf("%.0f/s (%d, %d errors), %.0f µs CPU each, steal %.0f ms", r.rate, r.conns, r.errs, r.cpuPer, r.steal)
}

// round runs -workers loops of dial, GET /healthz, close for -duration.
func round(l *lm, o options, dial func() (net.Conn, error)) result {
	cpu0, _ := procfs.CPUTicks(l.cmd.Process.Pid)
	steal0, _ := procfs.StealTicks()
	var n, errs atomic.Int64
	stop := time.Now().Add(o.duration)
	start := time.Now()
	var wg sync.WaitGroup
	for range o.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(stop) {
				if err := once(dial); err != nil {
					errs.Add(1)
					continue
				}
				n.Add(1)
			}
		}()
	}
	wg.Wait()
	el := time.Since(start)
	cpu1, _ := procfs.CPUTicks(l.cmd.Process.Pid)
	steal1, _ := procfs.StealTicks()
	r := result{conns: int(n.Load()), errs: int(errs.Load()), rate: float64(n.Load()) / el.Seconds(),
		steal: float64(steal1-steal0) * 1000 / procfs.ClockTicks}
	if r.conns > 0 {
		r.cpuPer = float64(cpu1-cpu0) / procfs.ClockTicks * 1e6 / float64(r.conns)
	}
	return r
}

func once(dial func() (net.Conn, error)) error {
	c, err := dial()
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: lanmanager.allex\r\nConnection: close\r\n\r\n"); err != nil {
		return err
	}
	b, err := io.ReadAll(c)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		return err
	}
	if !bytes.HasPrefix(b, []byte("HTTP/1.1 200")) {
		return fmt.Errorf("answer %q", firstLine(b))
	}
	return nil
}

func firstLine(b []byte) string {
	line, _, _ := bytes.Cut(b, []byte("\r\n"))
	return string(line)
}

func median(rs []result) result {
	s := slices.Clone(rs)
	slices.SortFunc(s, func(a, b result) int {
		switch {
		case a.rate < b.rate:
			return -1
		case a.rate > b.rate:
			return 1
		}
		return 0
	})
	return s[len(s)/2]
}
