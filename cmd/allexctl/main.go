// Command allexctl inspects and controls the local allexmaster over its
// machine socket, and the LAN manager's needs and services over its admin
// API.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/allex-go/allex/internal/machinesock"
	"github.com/allex-go/allex/internal/version"
)

const usage = `usage: allexctl [global flags] COMMAND [flags] [args]

Machine (over the master's socket):
  status                       master status and port usage
  ps                           supervised processes
  ports [INSTANCE|-module M]   ports held by processes
  start [flags] INSTANCE [-- COMMAND ARGS...]
                               start a process (a configured module, or a command)
  stop [-rm] [-force] INSTANCE stop a process gracefully (-rm: forget it too;
                               -force: a LAN need's child too, which is re-offered)
  restart INSTANCE             restart a process
  logs [-f] [-n N] [-stream stdout|stderr] INSTANCE
  events [INSTANCE]            follow lifecycle events

LAN (over the LAN manager's admin API):
  services [-w] [-since REV] [-module M] [INSTANCE]
  needs ls | needs add [flags] INSTANCE | needs add -f FILE | needs rm INSTANCE
  machines | machines revoke [-reason TEXT] ID
                               (revoke: cut a master off for good; its needs move)

  version                      allexctl's version and the master's

Global flags:
`

type globals struct {
	socket, output, lan, token, tokenFile, ca string
	stdout, stderr                            io.Writer
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "allexctl:", err)
		}
		os.Exit(1)
	}
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	g := &globals{stdout: stdout, stderr: stderr}
	fs := flag.NewFlagSet("allexctl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		fs.PrintDefaults()
	}
	fs.StringVar(&g.socket, "socket", envOr("ALLEX_SOCKET", machinesock.Default), "machine socket (env ALLEX_SOCKET)")
	fs.StringVar(&g.output, "o", "table", "output: table or json")
	fs.StringVar(&g.lan, "lan", envOr("ALLEX_LAN", "127.0.0.1:23552"), "LAN manager: host, host:port or http(s)://host:port (env ALLEX_LAN)")
	fs.StringVar(&g.token, "token", os.Getenv("ALLEX_LAN_TOKEN"), "LAN manager token (env ALLEX_LAN_TOKEN)")
	fs.StringVar(&g.tokenFile, "token-file", os.Getenv("ALLEX_LAN_TOKEN_FILE"), "file holding the LAN manager token (env ALLEX_LAN_TOKEN_FILE)")
	fs.StringVar(&g.ca, "ca", os.Getenv("ALLEX_LAN_CA"), "the LAN's CA certificate (the LAN manager's <data>/tls/ca.crt) when the token carries no CA fingerprint (env ALLEX_LAN_CA)")
	showVersion := fs.Bool("version", false, "print allexctl's version and exit")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *showVersion {
		_, err := fmt.Fprintln(stdout, "allexctl", version.String())
		return err
	}
	if g.output != "table" && g.output != "json" {
		return fmt.Errorf("-o %q: want table or json", g.output)
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return errors.New("no command given")
	}
	cmd, rest := fs.Arg(0), fs.Args()[1:]
	switch cmd {
	case "status":
		return g.status(ctx, rest)
	case "ps":
		return g.ps(ctx, rest)
	case "ports":
		return g.ports(ctx, rest)
	case "start":
		return g.start(ctx, rest)
	case "stop":
		return g.stop(ctx, rest)
	case "restart":
		return g.restart(ctx, rest)
	case "logs":
		return g.logs(ctx, rest)
	case "events":
		return g.events(ctx, rest)
	case "services":
		return g.services(ctx, rest)
	case "needs":
		return g.needs(ctx, rest)
	case "machines":
		return g.machines(ctx, rest)
	case "version":
		return g.version(ctx, rest)
	case "help":
		fs.Usage()
		return nil
	}
	return fmt.Errorf("unknown command %q (see allexctl help)", cmd)
}

// subFlags builds a sub-command's flag set with the shared output flag.
func (g *globals) subFlags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet("allexctl "+name, flag.ContinueOnError)
	fs.SetOutput(g.stderr)
	fs.StringVar(&g.output, "o", g.output, "output: table or json")
	return fs
}

// kv collects repeatable key=value flags.
type kv map[string]string

func (m kv) String() string { return fmt.Sprint(map[string]string(m)) }

func (m kv) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return fmt.Errorf("%q: want key=value", s)
	}
	m[k] = v
	return nil
}

type flagSet = flag.FlagSet
