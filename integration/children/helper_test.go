//go:build !windows

package children

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/allex-go/allex/child"
	allexv1 "github.com/allex-go/allex/gen/allex/v1"
	"github.com/allex-go/allex/internal/e2e"
)

// Helper modes of this package, on top of e2e.HelperMain's.
const (
	// modeLib is a child built on the child library: it listens on every
	// assigned port (automatic readiness), answers port queries and prints
	// what it learnt as one "lib-result {json}" line, then waits to be
	// stopped and prints how ("lib-exit shutdown-rpc ..." or "lib-exit
	// signal").
	modeLib = "lib"
)

// Environment knobs of modeLib.
const (
	// envStale=1 leaves a stale socket file at the child's own
	// /tmp/allexprocess.<pid> before the library starts, as a dead process
	// with the same pid would have.
	envStale = "ALLEX_TEST_STALE"
	// envAlloc=1 asks the master for one extra tcp port.
	envAlloc = "ALLEX_TEST_ALLOC"
	// envPeer names another instance whose ports the child looks up.
	envPeer = "ALLEX_TEST_PEER"
	// envUnlink=1 removes the child's Process socket file once registered,
	// so the master's Shutdown call cannot reach it.
	envUnlink = "ALLEX_TEST_UNLINK"
	// envStubborn=1 makes the child ignore every request to stop.
	envStubborn = "ALLEX_TEST_STUBBORN"
)

// queryTimeout bounds the helper's calls to the master on a loaded machine.
const queryTimeout = 30 * time.Second

func helperMain() int {
	if os.Getenv("ALLEX_TEST_HELPER") == modeLib {
		return libChild()
	}
	return e2e.HelperMain()
}

// libResult is what a modeLib child prints about itself.
type libResult struct {
	PID          int                 `json:"pid"`
	Socket       string              `json:"socket"`
	StaleCreated bool                `json:"stale_created"`
	Own          map[string]uint16   `json:"own"`
	LookupSelf   map[string][]portJS `json:"lookup_self"`
	Extra        uint16              `json:"extra"`
	Peer         map[string][]portJS `json:"peer"`
}

type portJS struct {
	Protocol string `json:"protocol"`
	Port     uint32 `json:"port"`
	Extra    bool   `json:"extra"`
}

func portsByInstance(in []*allexv1.InstancePorts) map[string][]portJS {
	out := make(map[string][]portJS, len(in))
	for _, ip := range in {
		var ps []portJS
		for _, p := range ip.GetPorts() {
			ps = append(ps, portJS{Protocol: p.GetProtocol().String(), Port: p.GetPort(), Extra: p.GetExtra()})
		}
		out[ip.GetInstance()] = ps
	}
	return out
}

func libChild() int {
	pid := os.Getpid()
	fmt.Printf("helper %s pid %d instance %s\n", modeLib, pid, os.Getenv("ALLEX_INSTANCE"))
	res := libResult{PID: pid}
	if os.Getenv(envStale) == "1" {
		path := filepath.Join("/tmp", "allexprocess."+strconv.Itoa(pid))
		if err := leaveStaleSocket(path); err != nil {
			fmt.Println("lib-error:", err)
			return 5
		}
		res.StaleCreated = true
		fmt.Println("stale socket left at", path)
	}
	log := hclog.New(&hclog.LoggerOptions{Name: "lib", Output: os.Stderr, Level: hclog.Debug})
	opts := child.DefaultOptions()
	opts.Logger = log
	var viaRPC bool
	var grace time.Duration
	err := child.Run(context.Background(), opts, func(ctx context.Context, c *child.Child) error {
		res.Socket = c.SocketPath()
		res.Own = c.Ports()
		for proto := range c.Ports() {
			ln, err := c.Listen(proto)
			if err != nil {
				return err
			}
			defer ln.Close()
			go acceptAndClose(ln)
		}
		qctx, cancel := context.WithTimeout(ctx, queryTimeout)
		defer cancel()
		self, err := c.LookupPorts(qctx, "", "")
		if err != nil {
			return err
		}
		res.LookupSelf = portsByInstance(self)
		if os.Getenv(envAlloc) == "1" {
			if res.Extra, err = c.AllocatePort(qctx, child.ProtoTCP); err != nil {
				return err
			}
		}
		if peer := os.Getenv(envPeer); peer != "" {
			others, err := c.LookupPorts(qctx, "", peer)
			if err != nil {
				return err
			}
			res.Peer = portsByInstance(others)
		}
		b, err := json.Marshal(res)
		if err != nil {
			return err
		}
		fmt.Printf("lib-result %s\n", b)
		if os.Getenv(envUnlink) == "1" {
			if err := os.Remove(c.SocketPath()); err != nil {
				return err
			}
			fmt.Println("lib unlinked its process socket")
		}
		<-ctx.Done()
		if os.Getenv(envStubborn) == "1" {
			fmt.Println("lib ignores the stop")
			time.Sleep(10 * time.Minute)
		}
		select {
		case <-c.ShutdownRequested():
			viaRPC, grace = true, c.ShutdownGrace()
		default:
		}
		return nil
	})
	if err != nil {
		fmt.Println("lib-error:", err)
		return 1
	}
	if viaRPC {
		fmt.Printf("lib-exit shutdown-rpc grace=%s\n", grace)
	} else {
		fmt.Println("lib-exit signal")
	}
	return 0
}

// leaveStaleSocket creates a unix socket file at path that nobody listens
// on, the way a SIGKILLed process leaves its socket behind.
func leaveStaleSocket(path string) error {
	if _, err := os.Lstat(path); err == nil {
		return fmt.Errorf("%s already exists", path)
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return err
	}
	ln.SetUnlinkOnClose(false)
	if err := ln.Close(); err != nil {
		return err
	}
	if fi, err := os.Lstat(path); err != nil || fi.Mode()&os.ModeSocket == 0 {
		return fmt.Errorf("stale socket %s not in place: %v", path, err)
	}
	return nil
}

func acceptAndClose(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		_ = c.Close()
	}
}
