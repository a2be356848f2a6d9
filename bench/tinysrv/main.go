// Command tinysrv is the tiny child the bench command runs under every
// supervisor: it listens on 127.0.0.1:<port> (argv[1], else $PORT, else
// $ALLEX_TCP_PORT), and answers each connection with its pid and a newline
// before closing it, so the bench can tell a replacement from the process
// it killed without asking the supervisor.
//
// The bench runs the C version in bench/tinysrv-c by default, which behaves
// the same but does not pay the Go runtime's start CPU for every child;
// this one runs with -child go.
package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
)

func main() {
	// run only returns on failure: a supervisor stops tinysrv by signal.
	fmt.Fprintln(os.Stderr, "tinysrv:", run())
	os.Exit(1)
}

func run() error {
	port := ""
	if len(os.Args) > 1 {
		port = os.Args[1]
	}
	for _, env := range []string{"PORT", "ALLEX_TCP_PORT"} {
		if port == "" {
			port = os.Getenv(env)
		}
	}
	// Port 0 would listen on a port nobody asked for.
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return errors.New("want a port as argv[1], $PORT or $ALLEX_TCP_PORT")
	}
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", port))
	if err != nil {
		return err
	}
	answer := []byte(strconv.Itoa(os.Getpid()) + "\n")
	for {
		c, err := ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return err
		}
		// A failed write only means the prober already left.
		_, _ = c.Write(answer)
		_ = c.Close()
	}
}
