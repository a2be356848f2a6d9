//go:build !windows

package main

import (
	"fmt"
	"testing"
	"time"

	"github.com/allex-go/allex/internal/e2e"
)

// TestLANCommands: the output of the LAN subcommands (machines, needs
// add/ls/rm, services) and of ps for a need's child, against a real
// allexlanmanager and a real allexmaster linked to it, matches its
// golden file.
func TestLANCommands(t *testing.T) {
	t.Parallel()
	l := e2e.StartLAN(t, e2e.LANOpts{})
	m := e2e.StartLANMaster(t, l, e2e.MasterOpts{MachineID: "gm1", Size: 10})
	l.WaitConnected(t, 30*time.Second, "gm1")
	n := machineNormalizer(t, m, 10)
	n.literal = append([]string{l.URL, "<lan>", l.Token, "<token>", e2e.Bins.Master, "<allexmaster>"}, n.literal...)
	if id := l.Machines(t)["gm1"].Identity; id != "" {
		n.literal = append(n.literal, id, "<identity>")
	}
	c := func(args ...string) result {
		return ctl(t, append([]string{"-lan", l.URL, "-token", l.Token}, args...)...)
	}

	golden(t, "lan_machines", n, c("machines"))
	added := []result{
		c("needs", "add", "-module", "demo", "-protocols", "tcp,http", "n1"),
		c("needs", "add", "-module", "demo", "-fixed", "tcp=9000", "n2"),
		c("needs", "add", "-module", "demo", "-fixed", "tcp=0", "-protocols", "tcp", "n2"),
		c("needs", "add", "n3"),
		c("needs", "add", "-module", "demo", "bad name"),
		c("needs", "add", "-f", "/nonexistent/needs.json"),
	}
	l.WaitServices(t, 60*time.Second, "n1")
	waitReady(t, m, "n1")
	golden(t, "lan_needs_add", n, added...)
	golden(t, "lan_running", n, c("needs", "ls"), c("services"), c("services", "-module", "nope"),
		ctl(t, "-socket", m.Socket, "ps"), ctl(t, "-socket", m.Socket, "stop", "n1"))

	removed := c("needs", "rm", "n1")
	e2e.Eventually(t, 60*time.Second, func() error {
		if _, ok := l.Needs(t)["n1"]; ok {
			return fmt.Errorf("n1 still listed")
		}
		if len(l.Services(t)) != 0 {
			return fmt.Errorf("n1 still published")
		}
		return nil
	})
	golden(t, "lan_needs_rm", n, removed, c("needs", "ls"), c("services"), c("needs", "rm", "nope"),
		ctl(t, "-lan", l.URL, "-token", "wrong", "needs", "ls"),
		ctl(t, "-lan", "127.0.0.1:1", "-token", "t", "machines"))
}
