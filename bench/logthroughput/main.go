//go:build linux

// Command logthroughput measures what logging through allexmaster costs a
// child that writes as fast as it can: the same writer (this binary, run
// as a child) writes -bytes to its stdout once straight into a file, as
// children did before their output went through the master, and once
// through a real allexmaster (its pipes, pumps and rotated files, with the
// default limits), in alternation for -rounds rounds. The writer times
// itself, from its first write to the return of its last; the bench
// prints each rate, the medians and their ratio, and the master's CPU time
// per GiB it logged.
//
//	go run ./bench/logthroughput                 # 3 rounds of 512 MiB in 8 KiB writes
//	go run ./bench/logthroughput -block 65536 -bytes 1GiB -rounds 5
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/allex-go/allex/agent/config"
	allexv1 "github.com/allex-go/allex/gen/allex/v1"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// writerEnv makes this binary the writer; it names the result file.
const writerEnv = "LOGTHROUGHPUT_RESULT"

// result is what the writer reports.
type result struct {
	Bytes   int64         `json:"bytes"`
	Elapsed time.Duration `json:"elapsed"`
	// Pipe is the capacity of the writer's stdout at its end when it
	// is a pipe, else 0.
	Pipe int `json:"pipe"`
}

func (r result) rate() float64 { return float64(r.Bytes) / r.Elapsed.Seconds() }

func main() {
	if path := os.Getenv(writerEnv); path != "" {
		os.Exit(writer(path))
	}
	if err := run(os.Args[1:], os.Stdout); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "logthroughput:", err)
		}
		os.Exit(1)
	}
}

// writer writes LOGTHROUGHPUT_BYTES in LOGTHROUGHPUT_BLOCK writes to
// stdout, then its result to path.
func writer(path string) int {
	var total, block config.ByteSize
	if err := errors.Join(total.UnmarshalJSON([]byte(os.Getenv("LOGTHROUGHPUT_BYTES"))),
		block.UnmarshalJSON([]byte(os.Getenv("LOGTHROUGHPUT_BLOCK")))); err != nil || block <= 0 {
		fmt.Fprintln(os.Stderr, "writer:", err)
		return 2
	}
	buf := []byte(strings.Repeat(strings.Repeat("y", 63)+"\n", int(block+63)/64))[:block]
	start := time.Now()
	var n int64
	for n < int64(total) {
		m, err := os.Stdout.Write(buf)
		n += int64(m)
		if err != nil {
			fmt.Fprintln(os.Stderr, "writer:", err)
			return 3
		}
	}
	elapsed := time.Since(start)
	pipe, _ := unix.FcntlInt(os.Stdout.Fd(), unix.F_GETPIPE_SZ, 0)
	b, _ := json.Marshal(result{Bytes: n, Elapsed: elapsed, Pipe: max(pipe, 0)})
	if err := os.WriteFile(path, b, 0o600); err != nil {
		fmt.Fprintln(os.Stderr, "writer:", err)
		return 4
	}
	return 0
}

type options struct {
	bytes, block config.ByteSize
	rounds       int
	work, exe    string
	master       string
}

func run(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("logthroughput", flag.ContinueOnError)
	o := options{bytes: 512 << 20, block: 8 << 10}
	fs.Func("bytes", "bytes each writer writes (e.g. 512MiB)", byteFlag(&o.bytes))
	fs.Func("block", "size of each write (e.g. 8KiB, GNU yes's; 64KiB)", byteFlag(&o.block))
	fs.IntVar(&o.rounds, "rounds", 3, "rounds, each one run of both")
	dir := fs.String("dir", "", "where the files go (default: a temp dir, removed at the end)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if o.rounds < 1 || o.block < 1 || o.bytes < o.block {
		return fmt.Errorf("want -rounds >= 1 and 0 < -block <= -bytes")
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	o.exe = exe
	o.work = *dir
	if o.work == "" {
		if o.work, err = os.MkdirTemp("", "logthroughput-"); err != nil {
			return err
		}
		defer os.RemoveAll(o.work)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	o.master = filepath.Join(o.work, "allexmaster")
	build := exec.CommandContext(ctx, "go", "build", "-o", o.master, "github.com/allex-go/allex/cmd/allexmaster")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		return fmt.Errorf("build allexmaster: %w", err)
	}
	m, err := startMaster(ctx, &o)
	if err != nil {
		return err
	}
	defer m.stop()

	fmt.Fprintf(out, "writer: %s in writes of %s, %d rounds; logs: allex defaults (%s x %d files per stream)\n",
		o.bytes, o.block, o.rounds, config.ByteSize(10<<20), 5)
	var direct, through []float64
	var cpu time.Duration
	for round := 1; round <= o.rounds; round++ {
		d, err := runDirect(ctx, &o, round)
		if err != nil {
			return fmt.Errorf("round %d, direct: %w", round, err)
		}
		before := m.cpu()
		t, err := m.runThrough(ctx, &o, round)
		if err != nil {
			return fmt.Errorf("round %d, through allexmaster: %w", round, err)
		}
		cpu += m.cpu() - before
		direct, through = append(direct, d.rate()), append(through, t.rate())
		fmt.Fprintf(out, "round %d: direct to a file %s/s, through allexmaster %s/s (%.2f; pipe of %s)\n",
			round, mib(d.rate()), mib(t.rate()), t.rate()/d.rate(), config.ByteSize(t.Pipe))
	}
	dm, tm := median(direct), median(through)
	fmt.Fprintf(out, "median: direct %s/s, through allexmaster %s/s, ratio %.2f; master CPU %.2f s per GiB logged\n",
		mib(dm), mib(tm), tm/dm, cpu.Seconds()/(float64(o.rounds)*float64(o.bytes)/(1<<30)))
	return nil
}

func byteFlag(b *config.ByteSize) func(string) error {
	return func(s string) error {
		v, err := config.ParseByteSize(s)
		if err == nil && v <= 0 {
			err = fmt.Errorf("%q is not positive", s)
		}
		*b = v
		return err
	}
}

func mib(rate float64) string { return fmt.Sprintf("%.0f MiB", rate/(1<<20)) }

func median(v []float64) float64 {
	s := slices.Sorted(slices.Values(v))
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func writerEnvs(o *options, resultPath string) map[string]string {
	return map[string]string{
		writerEnv:             resultPath,
		"LOGTHROUGHPUT_BYTES": fmt.Sprint(int64(o.bytes)),
		"LOGTHROUGHPUT_BLOCK": fmt.Sprint(int64(o.block)),
	}
}

// runDirect runs the writer with its stdout appending to a file, as the
// master set children up before.
func runDirect(ctx context.Context, o *options, round int) (result, error) {
	logPath := filepath.Join(o.work, "direct.log")
	f, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|os.O_APPEND, 0o640)
	if err != nil {
		return result{}, err
	}
	defer os.Remove(logPath)
	defer f.Close()
	resultPath := filepath.Join(o.work, fmt.Sprintf("direct-%d.json", round))
	cmd := exec.CommandContext(ctx, o.exe)
	cmd.Stdout, cmd.Stderr = f, os.Stderr
	cmd.Env = os.Environ()
	for k, v := range writerEnvs(o, resultPath) {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	if err := cmd.Run(); err != nil {
		return result{}, err
	}
	return readResult(resultPath)
}

func readResult(path string) (result, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return result{}, err
	}
	var r result
	if err := json.Unmarshal(b, &r); err != nil {
		return result{}, fmt.Errorf("%s: %w", path, err)
	}
	return r, nil
}

// master is a running allexmaster without a LAN manager.
type master struct {
	cmd    *exec.Cmd
	conn   *grpc.ClientConn
	client allexv1.MachineManagerClient
}

func startMaster(ctx context.Context, o *options) (*master, error) {
	dir := filepath.Join(o.work, "master")
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, err
	}
	sock := filepath.Join(dir, "m.sock")
	cfg := fmt.Sprintf(`{"lanmanageraddress":"","portrangestart":{"tcp":41000,"http":41100,"ws":41200},"portrangesize":10,"socket":%q,"statedir":%q}`,
		sock, filepath.Join(dir, "state"))
	if err := os.WriteFile(filepath.Join(dir, config.FileName), []byte(cfg), 0o640); err != nil {
		return nil, err
	}
	out, err := os.Create(filepath.Join(dir, "allexmaster.out"))
	if err != nil {
		return nil, err
	}
	defer out.Close()
	m := &master{cmd: exec.Command(o.master, "-log-level", "warn")}
	m.cmd.Dir = dir
	m.cmd.Stdout, m.cmd.Stderr = out, out
	m.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := m.cmd.Start(); err != nil {
		return nil, err
	}
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		m.stop()
		return nil, err
	}
	m.conn, m.client = conn, allexv1.NewMachineManagerClient(conn)
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := m.client.Status(ctx, &allexv1.StatusRequest{})
		if err == nil {
			return m, nil
		}
		if time.Now().After(deadline) {
			m.stop()
			return nil, fmt.Errorf("allexmaster not answering within 30s: %w", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// cpu is the master's CPU time so far (utime+stime), its keeper's
// excluded: the keeper only forks.
func (m *master) cpu() time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", m.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	// Fields after the command name, which may hold ") ".
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(f) < 13 {
		return 0
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	// USER_HZ is 100 on every Linux architecture Go supports.
	return time.Duration(utime+stime) * (time.Second / 100)
}

// runThrough runs the writer as a child of the master and waits until it
// has exited.
func (m *master) runThrough(ctx context.Context, o *options, round int) (result, error) {
	inst := fmt.Sprintf("writer%d", round)
	resultPath := filepath.Join(o.work, inst+".json")
	spec := &allexv1.ModuleSpec{Module: "writer", Instance: inst, Command: o.exe, Env: writerEnvs(o, resultPath),
		Restart: allexv1.RestartPolicy_RESTART_POLICY_NEVER, Readiness: allexv1.Readiness_READINESS_NONE}
	if _, err := m.client.StartProcess(ctx, &allexv1.StartProcessRequest{Spec: spec}); err != nil {
		return result{}, err
	}
	for {
		p, err := m.client.GetProcess(ctx, &allexv1.GetProcessRequest{Instance: inst})
		if err != nil {
			return result{}, err
		}
		switch p.GetProcess().GetState() {
		case allexv1.ProcessState_PROCESS_STATE_EXITED:
			return readResult(resultPath)
		case allexv1.ProcessState_PROCESS_STATE_FAILED:
			return result{}, fmt.Errorf("writer failed: %s", p.GetProcess().GetLastError())
		}
		select {
		case <-ctx.Done():
			return result{}, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (m *master) stop() {
	if m.conn != nil {
		m.conn.Close()
	}
	_ = m.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = m.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = syscall.Kill(-m.cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
}
