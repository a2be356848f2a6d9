package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// runDemoChild is the demo module of -dev: a tiny service with a TCP echo
// port and an HTTP port, configured only through the ALLEX_* environment
// the master sets, as any unmodified program would be.
func runDemoChild() error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	instance := os.Getenv("ALLEX_INSTANCE")
	var closers []io.Closer
	defer func() {
		for _, c := range closers {
			c.Close()
		}
	}()
	if port := os.Getenv("ALLEX_TCP_PORT"); port != "" {
		ln, err := net.Listen("tcp", net.JoinHostPort("", port))
		if err != nil {
			return fmt.Errorf("tcp: %w", err)
		}
		closers = append(closers, ln)
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go func() {
					defer c.Close()
					_ = c.SetDeadline(time.Now().Add(time.Minute))
					_, _ = io.Copy(c, c)
				}()
			}
		}()
	}
	if port := os.Getenv("ALLEX_HTTP_PORT"); port != "" {
		ln, err := net.Listen("tcp", net.JoinHostPort("", port))
		if err != nil {
			return fmt.Errorf("http: %w", err)
		}
		srv := &http.Server{
			Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				fmt.Fprintf(w, "hello from %s (pid %d)\n", instance, os.Getpid())
			}),
			ReadHeaderTimeout: 5 * time.Second,
		}
		closers = append(closers, srv)
		go func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				fmt.Fprintln(os.Stderr, "http:", err)
			}
		}()
	}
	fmt.Printf("demo child %s up (pid %d)\n", instance, os.Getpid())
	<-ctx.Done()
	fmt.Printf("demo child %s stopping\n", instance)
	return nil
}
