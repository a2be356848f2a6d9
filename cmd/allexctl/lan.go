package main

import (
	"cmp"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/url"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/allex-go/allex/lanmanager/adminapi"
	"github.com/allex-go/allex/lanmanager/adminclient"
	"github.com/allex-go/allex/lanpki"
	"github.com/allex-go/allex/lanwire"
)

func (g *globals) lanClient() (*adminclient.Client, error) {
	u, err := lanURL(g.lan)
	if err != nil {
		return nil, err
	}
	g.lan = u
	token := g.token
	if token == "" && g.tokenFile != "" {
		b, err := os.ReadFile(g.tokenFile)
		if err != nil {
			return nil, fmt.Errorf("token file: %w", err)
		}
		token = strings.TrimSpace(string(b))
	}
	if token == "" {
		return nil, errors.New("the LAN manager needs a token: pass -token or -token-file (or set ALLEX_LAN_TOKEN)")
	}
	c := adminclient.New(g.lan, token)
	_, _, pinned := lanpki.SplitPin(token)
	switch {
	case g.ca != "":
		b, err := os.ReadFile(g.ca)
		if err != nil {
			return nil, fmt.Errorf("-ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("-ca %s: no PEM certificate in it", g.ca)
		}
		c.WithCA(pool)
	case strings.HasPrefix(g.lan, "https://") && !pinned:
		return nil, errors.New("the LAN manager speaks TLS: give -ca (its data dir's tls/ca.crt) or a token that carries the CA's fingerprint (K10…::…, as `allexlanmanager token create` prints)")
	}
	return c, nil
}

const lanWant = "want host, host:port or http(s)://host:port"

// lanURL turns -lan (or ALLEX_LAN) into the admin API's base URL: a host
// takes the LAN manager's default port, host:port means HTTPS, and a URL
// is taken as written (http:// for a LAN manager run with -insecure).
func lanURL(s string) (string, error) {
	in := s
	if !strings.Contains(s, "://") {
		host, port, err := net.SplitHostPort(s)
		if err != nil { // no port given
			host, port = strings.TrimSuffix(strings.TrimPrefix(s, "["), "]"), strconv.Itoa(lanwire.DefaultPort)
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return "", fmt.Errorf("-lan %q: port %q is not a number 1-65535 (%s)", in, port, lanWant)
		}
		s = "https://" + net.JoinHostPort(host, port)
	}
	u, err := url.Parse(s)
	if err != nil {
		return "", fmt.Errorf("-lan %q: %v (%s)", in, errors.Unwrap(err), lanWant)
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return "", fmt.Errorf("-lan %q: scheme %q (%s)", in, u.Scheme, lanWant)
	case u.Hostname() == "":
		return "", fmt.Errorf("-lan %q: no host (%s)", in, lanWant)
	case u.User != nil || u.RawQuery != "" || u.Fragment != "" || strings.Trim(u.Path, "/") != "":
		return "", fmt.Errorf("-lan %q: only a scheme, host and port are allowed (%s)", in, lanWant)
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return "", fmt.Errorf("-lan %q: port %q is not a number 1-65535 (%s)", in, p, lanWant)
		}
	}
	return u.Scheme + "://" + u.Host, nil
}

func (g *globals) printJSON(v any) error {
	enc := json.NewEncoder(g.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func (g *globals) services(ctx context.Context, args []string) error {
	fs := g.subFlags("services")
	module := fs.String("module", "", "only services of this module")
	watch := fs.Bool("w", false, "watch: print services coming up and going down")
	since := fs.Int64("since", 0, "watch from after this revision (the last one printed; LAN managers on etcd)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *since < 0 {
		return fmt.Errorf("-since %d: want a revision, 0 or more", *since)
	}
	c, err := g.lanClient()
	if err != nil {
		return err
	}
	if *watch || *since > 0 {
		return c.WatchSince(ctx, *module, *since, func(ev adminapi.ServiceEvent) error {
			if fs.NArg() > 0 && ev.Service.Instance != fs.Arg(0) {
				return nil
			}
			if g.output == "json" {
				b, err := json.Marshal(ev)
				if err != nil {
					return err
				}
				_, err = fmt.Fprintln(g.stdout, string(b))
				return err
			}
			s := ev.Service
			rev := ""
			if ev.Revision != 0 {
				rev = fmt.Sprintf(" rev %d", ev.Revision)
			}
			_, err := fmt.Fprintf(g.stdout, "%s  %-4s %-16s %-10s %s %s %s pid %d%s\n", time.Now().Format("15:04:05.000"), ev.Type, s.Instance, s.Module, s.MachineID, s.Address, portsOf(s.Ports), s.PID, rev)
			return err
		})
	}
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	recs, err := c.Services(cctx, *module, fs.Arg(0))
	if err != nil {
		return fmt.Errorf("LAN manager at %s: %w", g.lan, err)
	}
	if g.output == "json" {
		return g.printJSON(recs)
	}
	tw := g.table()
	fmt.Fprintln(tw, "INSTANCE\tMODULE\tMACHINE\tADDRESS\tPORTS\tPID\tPUBLISHED")
	for _, s := range recs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\n", s.Instance, s.Module, s.MachineID, s.Address, portsOf(s.Ports), s.PID, s.PublishedAt.Local().Format(time.RFC3339))
	}
	return tw.Flush()
}

func portsOf(p lanwire.Ports) string {
	var parts []string
	for _, proto := range lanwire.Protocols {
		if port, ok := p[proto]; ok {
			parts = append(parts, fmt.Sprintf("%s=%d", proto, port))
		}
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, ",")
}

func (g *globals) needs(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return errors.New("needs: want ls, add or rm")
	}
	c, err := g.lanClient()
	if err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	switch args[0] {
	case "ls", "list":
		fs := g.subFlags("needs ls")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		list, err := c.Needs(cctx)
		if err != nil {
			return fmt.Errorf("LAN manager at %s: %w", g.lan, err)
		}
		sort.Slice(list, func(i, j int) bool { return list[i].Need.Instance < list[j].Need.Instance })
		if g.output == "json" {
			return g.printJSON(list)
		}
		tw := g.table()
		fmt.Fprintln(tw, "INSTANCE\tMODULE\tPROTOCOLS\tSTATE\tMACHINE\tEPOCH\tATTEMPTS\tORIGIN\tLAST ERROR")
		for _, n := range list {
			state, epoch := n.State, "-"
			if n.Removed {
				state += " (removed)"
			}
			if n.Epoch != 0 {
				epoch = strconv.FormatUint(n.Epoch, 10)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", n.Need.Instance, n.Need.Module, strings.Join(n.Need.Protocols, ","), state, dash(n.Machine), epoch, n.Attempts, dash(n.Origin), n.LastError)
		}
		return tw.Flush()
	case "add":
		needs, err := parseNeedAdd(g, args[1:])
		if err != nil {
			return err
		}
		for _, n := range needs {
			if err := c.AddNeed(cctx, n); err != nil {
				return fmt.Errorf("add need %s: %w", n.Instance, err)
			}
			fmt.Fprintf(g.stdout, "need %s added\n", n.Instance)
		}
		return nil
	case "rm", "remove":
		if len(args) != 2 {
			return errors.New("needs rm: exactly one INSTANCE is required")
		}
		if err := c.RemoveNeed(cctx, args[1]); err != nil {
			return fmt.Errorf("remove need %s: %w", args[1], err)
		}
		fmt.Fprintf(g.stdout, "need %s removed\n", args[1])
		return nil
	}
	return fmt.Errorf("needs %q: want ls, add or rm", args[0])
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func parseNeedAdd(g *globals, args []string) ([]lanwire.Need, error) {
	fs := g.subFlags("needs add")
	file := fs.String("f", "", "needs file ({\"needs\":[...]}) to add from")
	module := fs.String("module", "", "module name (required)")
	protocols := fs.String("protocols", "", "comma-separated protocols: tcp,http,ws")
	machine := fs.String("machine", "", "only this machine id may run it")
	addr := fs.String("machine-address", "", "only masters at this IP or inside this CIDR may run it")
	timeout := fs.Duration("timeout", 0, "time a granted need has to come up (default 60s)")
	fixed, props := kv{}, kv{}
	fs.Var(fixed, "fixed", "PROTOCOL=PORT fixed port (repeatable)")
	fs.Var(props, "property", "KEY=VALUE property (repeatable)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if *file != "" {
		b, err := os.ReadFile(*file)
		if err != nil {
			return nil, fmt.Errorf("needs add: %w", err)
		}
		return lanwire.ParseNeedsFile(*file, b)
	}
	if fs.NArg() != 1 {
		return nil, errors.New("needs add: exactly one INSTANCE is required (or -f FILE)")
	}
	n := lanwire.Need{Instance: fs.Arg(0), Module: *module, TimeoutMS: timeout.Milliseconds()}
	if *protocols != "" {
		for _, p := range strings.Split(*protocols, ",") {
			n.Protocols = append(n.Protocols, strings.TrimSpace(p))
		}
	}
	if len(props) > 0 {
		n.Properties = props
	}
	if len(fixed) > 0 {
		n.FixedPorts = lanwire.Ports{}
		for k, v := range fixed {
			port, err := strconv.ParseUint(v, 10, 16)
			if err != nil || port == 0 {
				return nil, fmt.Errorf("needs add: -fixed %s=%s: want a port 1-65535", k, v)
			}
			n.FixedPorts[k] = uint16(port)
		}
	}
	if *machine != "" || *addr != "" {
		n.Machine = &lanwire.MachineConstraint{ID: *machine, Address: *addr}
	}
	for _, k := range slices.Sorted(maps.Keys(fixed)) {
		if !slices.Contains(n.Protocols, k) {
			return nil, fmt.Errorf("needs add: -fixed %s=%s: %s is not in -protocols (%s); list it there too", k, fixed[k], k, cmp.Or(*protocols, "none"))
		}
	}
	if err := n.Validate(); err != nil {
		return nil, fmt.Errorf("needs add: %w", err)
	}
	return []lanwire.Need{n}, nil
}

func (g *globals) machines(ctx context.Context, args []string) error {
	if len(args) > 0 && args[0] == "revoke" {
		return g.revokeMachine(ctx, args[1:])
	}
	fs := g.subFlags("machines")
	if err := fs.Parse(args); err != nil {
		return err
	}
	c, err := g.lanClient()
	if err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	list, err := c.Machines(cctx)
	if err != nil {
		return fmt.Errorf("LAN manager at %s: %w", g.lan, err)
	}
	if g.output == "json" {
		return g.printJSON(list)
	}
	tw := g.table()
	fmt.Fprintln(tw, "MACHINE\tIDENTITY\tADDRESS\tCONNECTED\tRUNNING\tMAX\tSERVICES\tCOPIES\tLAST SEEN\tCOPIES END")
	for _, m := range list {
		max := "-"
		if m.Capacity.MaxProcesses > 0 {
			max = strconv.Itoa(m.Capacity.MaxProcesses)
		}
		ends := "-"
		if !m.CopiesEndAt.IsZero() {
			ends = m.CopiesEndAt.Local().Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%v\t%d\t%s\t%d\t%d\t%s\t%s\n", m.ID, dash(m.Identity), dash(m.Address), m.Connected, m.Capacity.Running, max, m.Services, m.Copies, m.LastSeen.Local().Format(time.RFC3339), ends)
	}
	return tw.Flush()
}

// revokeMachine cuts a master off for good: the LAN manager closes its
// link and refuses it from then on, and its needs move once it is fenced.
func (g *globals) revokeMachine(ctx context.Context, args []string) error {
	fs := g.subFlags("machines revoke")
	reason := fs.String("reason", "", "why, kept with the revocation and sent to the master")
	force := fs.Bool("force", false, "revoke an id the LAN manager does not list (a machine that is off and holds nothing)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return errors.New("machines revoke: want one machine id")
	}
	c, err := g.lanClient()
	if err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	if !*force {
		// A revocation is for good: a mistyped id must not be cut off.
		list, err := c.Machines(cctx)
		if err != nil {
			return fmt.Errorf("LAN manager at %s: %w", g.lan, err)
		}
		if !slices.ContainsFunc(list, func(m adminapi.MachineInfo) bool { return m.ID == fs.Arg(0) }) {
			return fmt.Errorf("machines revoke: the LAN manager lists no machine %q (allexctl machines); -force revokes it anyway, for good", fs.Arg(0))
		}
	}
	if err := c.RevokeMachine(cctx, fs.Arg(0), *reason); err != nil {
		return fmt.Errorf("LAN manager at %s: %w", g.lan, err)
	}
	fmt.Fprintf(g.stdout, "machine %s revoked: its link is closed, and its needs move once it is fenced\n", fs.Arg(0))
	return nil
}
