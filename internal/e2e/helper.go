//go:build !windows

package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	allexv1 "github.com/allex-go/allex/gen/allex/v1"
)

// HelperMain is the test binary acting as a child of allexmaster, with the
// behaviour ALLEX_TEST_HELPER names.
func HelperMain() int {
	mode := os.Getenv("ALLEX_TEST_HELPER")
	fmt.Printf("helper %s pid %d instance %s\n", mode, os.Getpid(), os.Getenv("ALLEX_INSTANCE"))
	term := make(chan os.Signal, 1)
	switch mode {
	case "ignoreterm":
		signal.Ignore(syscall.SIGTERM)
	default:
		signal.Notify(term, syscall.SIGTERM, os.Interrupt)
	}
	switch mode {
	case "listen", "ignoreterm":
		for _, v := range []string{"ALLEX_TCP_PORT", "ALLEX_HTTP_PORT", "ALLEX_WS_PORT"} {
			if port := os.Getenv(v); port != "" {
				ln, err := net.Listen("tcp", ":"+port)
				if err != nil {
					fmt.Fprintln(os.Stderr, "listen:", err)
					return 3
				}
				go func() {
					for {
						c, err := ln.Accept()
						if err != nil {
							return
						}
						c.Close()
					}
				}()
			}
		}
		fmt.Println("listening")
	case "never":
		fmt.Println("never listening")
	case "flood":
		return flood()
	case "bursts":
		if code := bursts(); code != 0 {
			return code
		}
	case "exit":
		code, _ := strconv.Atoi(os.Getenv("ALLEX_TEST_CODE"))
		return code
	case "lie", "alloc", "sdk":
		conn, err := grpc.NewClient("unix://"+os.Getenv("ALLEX_MASTER_SOCKET"), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			fmt.Println("dial:", err)
			return 3
		}
		defer conn.Close()
		c := allexv1.NewMachineManagerClient(conn)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		inst := os.Getenv("ALLEX_INSTANCE")
		if mode == "lie" {
			_, err = c.Register(ctx, &allexv1.RegisterRequest{Instance: inst, Pid: 1})
			fmt.Printf("lie: %s\n", status.Code(err))
			_, err = c.Register(ctx, &allexv1.RegisterRequest{Instance: "someone-else", Pid: int32(os.Getpid())})
			fmt.Printf("other instance: %s\n", status.Code(err))
		}
		_, err = c.Register(ctx, &allexv1.RegisterRequest{Instance: inst, Pid: int32(os.Getpid())})
		fmt.Printf("honest: %s\n", status.Code(err))
		switch mode {
		case "alloc":
			r, err := c.AllocatePort(ctx, &allexv1.AllocatePortRequest{Protocol: allexv1.Protocol_PROTOCOL_TCP})
			fmt.Printf("extra port: %d %s\n", r.GetPort(), status.Code(err))
		case "sdk":
			time.Sleep(300 * time.Millisecond)
			_, err := c.ReportReady(ctx, &allexv1.ReportReadyRequest{})
			fmt.Printf("ready: %s\n", status.Code(err))
		}
	}
	select {
	case <-term:
		fmt.Println("got SIGTERM")
		return 0
	case <-time.After(10 * time.Minute):
		return 4
	}
}

// floodLine is the length of the lines flood and bursts write.
const floodLine = 64

// flood writes ALLEX_TEST_BYTES bytes of numbered lines to stdout as fast
// as the pipe takes them, 8 KiB at a time, then a last line, and exits.
func flood() int {
	total, _ := strconv.Atoi(os.Getenv("ALLEX_TEST_BYTES"))
	w := bufio.NewWriterSize(os.Stdout, 8<<10)
	n := total / floodLine
	for i := range n {
		fmt.Fprintf(w, "flood %09d %s\n", i, strings.Repeat("y", floodLine-17))
	}
	fmt.Fprintf(w, "flood done after %d lines\n", n)
	if err := w.Flush(); err != nil {
		fmt.Fprintln(os.Stderr, "flood:", err)
		return 5
	}
	fmt.Fprintln(os.Stderr, "flood wrote", n*floodLine, "bytes")
	return 0
}

// bursts writes ALLEX_TEST_BURSTS bursts of ALLEX_TEST_LINES numbered
// lines, each once the test creates $ALLEX_TEST_GATE/go.<burst>, and an
// "end of burst" line after each.
func bursts() int {
	count, _ := strconv.Atoi(os.Getenv("ALLEX_TEST_BURSTS"))
	lines, _ := strconv.Atoi(os.Getenv("ALLEX_TEST_LINES"))
	w := bufio.NewWriterSize(os.Stdout, 8<<10)
	for k := range count {
		gate := filepath.Join(os.Getenv("ALLEX_TEST_GATE"), "go."+strconv.Itoa(k))
		deadline := time.Now().Add(time.Minute)
		for _, err := os.Stat(gate); err != nil; _, err = os.Stat(gate) {
			if time.Now().After(deadline) {
				fmt.Fprintln(os.Stderr, "bursts: no", gate)
				return 5
			}
			time.Sleep(5 * time.Millisecond)
		}
		for i := k * lines; i < (k+1)*lines; i++ {
			fmt.Fprintf(w, "line %09d %s\n", i, strings.Repeat("z", floodLine-16))
		}
		fmt.Fprintf(w, "end of burst %d\n", k)
		if err := w.Flush(); err != nil {
			fmt.Fprintln(os.Stderr, "bursts:", err)
			return 5
		}
	}
	return 0
}
