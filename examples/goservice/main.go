// Command goservice is an example allexmaster child written with the child
// library: a TCP echo server, an HTTP server ("hello from <instance>" and
// /healthz) and a WebSocket echo server, each on the port the master
// assigned. It reports ready once all three listen (readiness "sdk") and
// exits 0 on SIGTERM, SIGINT or the master's Process.Shutdown.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/hashicorp/go-hclog"

	"github.com/allex-go/allex/child"
)

// idleTimeout drops echo connections nobody uses, so a forgotten client
// cannot pin a goroutine forever.
const idleTimeout = 5 * time.Minute

// defaultGrace bounds the drain when the stop came from a signal, which
// carries no grace period.
const defaultGrace = 5 * time.Second

func main() {
	log := hclog.New(&hclog.LoggerOptions{Name: "goservice", Output: os.Stderr, Level: hclog.Info})
	opts := child.DefaultOptions()
	opts.Logger = log
	err := child.Run(context.Background(), opts, func(ctx context.Context, c *child.Child) error {
		return serve(ctx, c, log)
	})
	if err != nil {
		log.Error("exiting", "error", err)
		os.Exit(1)
	}
}

// serve listens on the three assigned ports (the last Listen reports ready)
// and serves until ctx is done.
func serve(ctx context.Context, c *child.Child, log hclog.Logger) error {
	instance := c.Env().Instance
	var lns []net.Listener
	closeAll := func() {
		for _, ln := range lns {
			_ = ln.Close()
		}
	}
	for _, proto := range []string{child.ProtoTCP, child.ProtoHTTP, child.ProtoWS} {
		ln, err := c.Listen(proto)
		if err != nil {
			closeAll()
			return err
		}
		lns = append(lns, ln)
		log.Info("listening", "protocol", proto, "addr", ln.Addr())
	}
	tcpLn, httpLn, wsLn := lns[0], lns[1], lns[2]

	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = fmt.Fprintf(w, "hello from %s\n", instance)
	})
	httpSrv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}

	ws := newWSEcho(log)
	wsSrv := &http.Server{Handler: ws, ReadHeaderTimeout: 10 * time.Second}

	tcp := &tcpEcho{log: log}

	errs := make(chan error, 3)
	go func() { errs <- tcp.serve(tcpLn) }()
	go func() { errs <- httpSrv.Serve(httpLn) }()
	go func() { errs <- wsSrv.Serve(wsLn) }()

	var first error
	select {
	case <-ctx.Done():
	case first = <-errs:
		// A server died on its own: stop the others and report it.
	}
	grace := c.ShutdownGrace()
	if grace <= 0 {
		grace = defaultGrace
	}
	// Leave part of the grace for Close and the exit itself.
	sctx, cancel := context.WithTimeout(context.Background(), grace*3/4)
	defer cancel()
	_ = tcpLn.Close()
	tcp.closeConns()
	ws.closeConns()
	_ = httpSrv.Shutdown(sctx)
	_ = wsSrv.Shutdown(sctx)
	pending := 3
	if first != nil {
		pending = 2
	}
	for range pending {
		if err := <-errs; !isClosed(err) && first == nil {
			first = err
		}
	}
	tcp.wait()
	ws.wait()
	if isClosed(first) {
		return nil
	}
	return first
}

func isClosed(err error) bool {
	return err == nil || errors.Is(err, http.ErrServerClosed) || errors.Is(err, net.ErrClosed)
}

// tcpEcho echoes bytes back on every connection.
type tcpEcho struct {
	log    hclog.Logger
	mu     sync.Mutex
	closed bool
	conns  map[net.Conn]struct{}
	wg     sync.WaitGroup
}

func (e *tcpEcho) serve(ln net.Listener) error {
	for {
		conn, err := ln.Accept()
		if err != nil {
			return err
		}
		// Registering under the lock that closeConns takes means a
		// connection is either closed there or never served.
		e.mu.Lock()
		if e.closed {
			e.mu.Unlock()
			_ = conn.Close()
			continue
		}
		if e.conns == nil {
			e.conns = make(map[net.Conn]struct{})
		}
		e.conns[conn] = struct{}{}
		e.wg.Add(1)
		e.mu.Unlock()
		go func() {
			defer e.wg.Done()
			defer func() {
				e.mu.Lock()
				delete(e.conns, conn)
				e.mu.Unlock()
				_ = conn.Close()
			}()
			buf := make([]byte, 32*1024)
			for {
				_ = conn.SetDeadline(time.Now().Add(idleTimeout))
				n, err := conn.Read(buf)
				if n > 0 {
					if _, werr := conn.Write(buf[:n]); werr != nil {
						return
					}
				}
				if err != nil {
					return
				}
			}
		}()
	}
}

func (e *tcpEcho) closeConns() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.closed = true
	for conn := range e.conns {
		_ = conn.Close()
	}
}

func (e *tcpEcho) wait() { e.wg.Wait() }

// wsEcho echoes WebSocket messages back with their type.
type wsEcho struct {
	log      hclog.Logger
	upgrader websocket.Upgrader
	mu       sync.Mutex
	closed   bool
	conns    map[*websocket.Conn]struct{}
	wg       sync.WaitGroup
}

func newWSEcho(log hclog.Logger) *wsEcho {
	return &wsEcho{
		log: log,
		// An echo has nothing to protect from cross-origin pages; a real
		// service should check the origin.
		upgrader: websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }},
		conns:    make(map[*websocket.Conn]struct{}),
	}
}

func (e *wsEcho) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	conn, err := e.upgrader.Upgrade(w, r, nil)
	if err != nil {
		// Upgrade already answered with an HTTP error.
		return
	}
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		_ = conn.Close()
		return
	}
	e.conns[conn] = struct{}{}
	e.wg.Add(1)
	e.mu.Unlock()
	defer func() {
		e.mu.Lock()
		delete(e.conns, conn)
		e.mu.Unlock()
		_ = conn.Close()
		e.wg.Done()
	}()
	for {
		_ = conn.SetReadDeadline(time.Now().Add(idleTimeout))
		typ, msg, err := conn.ReadMessage()
		if err != nil {
			return
		}
		if err := conn.WriteMessage(typ, msg); err != nil {
			return
		}
	}
}

func (e *wsEcho) closeConns() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.closed = true
	for conn := range e.conns {
		_ = conn.WriteControl(websocket.CloseMessage,
			websocket.FormatCloseMessage(websocket.CloseGoingAway, "shutting down"), time.Now().Add(time.Second))
		_ = conn.Close()
	}
}

func (e *wsEcho) wait() { e.wg.Wait() }
