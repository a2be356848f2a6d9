package main

import (
	"context"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/allex-go/allex/lanmanager"
	"github.com/allex-go/allex/lanmanager/adminapi"
	"github.com/allex-go/allex/lanmanager/adminclient"
)

const tokenUsage = `usage: allexlanmanager token create [-role master|admin|read] [-ttl 24h] [-description TEXT]
       allexlanmanager token ls
       allexlanmanager token revoke ID
Each talks to the running LAN manager (-lan) as its administrator, with the
token and CA in its data dir (-data) unless -token-file and -ca are given.`

// runToken manages the LAN's tokens through the running LAN manager, as
// kubeadm's and k3s's token commands do through their API servers.
func runToken(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		fmt.Fprintln(stderr, tokenUsage)
		return errors.New("token: want create, ls or revoke")
	}
	verb := args[0]
	fs := flag.NewFlagSet("allexlanmanager token "+verb, flag.ContinueOnError)
	fs.SetOutput(stderr)
	lan := fs.String("lan", lanmanager.DefaultAddr, "the LAN manager: host:port (HTTPS) or its URL")
	data := fs.String("data", "./allexlanmanager.d", "its data directory: the token and tls/ca.crt are read from there")
	token := fs.String("token", "", "an admin token (default: the one in -token-file)")
	tokenFile := fs.String("token-file", "", "a file holding an admin token (default: <data>/token)")
	caFile := fs.String("ca", "", "the LAN's CA certificate (default: <data>/tls/ca.crt)")
	role := fs.String("role", adminapi.RoleMaster, "create: master (joins a machine), admin (reads and writes) or read (services, watch, needs, machines)")
	ttl := fs.Duration("ttl", 24*time.Hour, "create: the token expires after this (0: never)")
	desc := fs.String("description", "", "create: a note kept with the token")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if !strings.Contains(*lan, "://") {
		*lan = "https://" + *lan
	}
	c, err := tokenClient(*lan, *data, *token, *tokenFile, *caFile)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	switch {
	case verb == "create" && fs.NArg() == 0:
		if *ttl < 0 {
			return fmt.Errorf("-ttl %v: want 0 (never) or more", *ttl)
		}
		out, err := c.CreateToken(ctx, *role, *ttl, *desc)
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, out.Token)
		return nil
	case verb == "ls" && fs.NArg() == 0:
		return listTokens(ctx, c, stdout)
	case verb == "revoke" && fs.NArg() == 1:
		return c.RevokeToken(ctx, fs.Arg(0))
	}
	fmt.Fprintln(stderr, tokenUsage)
	return fmt.Errorf("token %s: unexpected arguments %q", verb, fs.Args())
}

func tokenClient(lan, data, token, tokenFile, caFile string) (*adminclient.Client, error) {
	if token == "" {
		if tokenFile == "" {
			tokenFile = filepath.Join(data, "token")
		}
		b, err := os.ReadFile(tokenFile)
		if err != nil {
			return nil, fmt.Errorf("admin token: %w (give -data, -token or -token-file)", err)
		}
		token = strings.TrimSpace(string(b))
	}
	c := adminclient.New(lan, token)
	if !strings.HasPrefix(lan, "https://") {
		return c, nil
	}
	if caFile == "" {
		caFile = filepath.Join(data, "tls", "ca.crt")
	}
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("CA: %w (give -data or -ca)", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("CA %s: no PEM certificate in it", caFile)
	}
	return c.WithCA(pool), nil
}

func listTokens(ctx context.Context, c *adminclient.Client, stdout io.Writer) error {
	ts, err := c.Tokens(ctx)
	if err != nil {
		return err
	}
	w := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "ID\tROLE\tEXPIRES\tCREATED\tDESCRIPTION")
	for _, t := range ts {
		exp := "never"
		if !t.Expires.IsZero() {
			exp = t.Expires.UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", t.ID, t.Role, exp, t.CreatedAt.UTC().Format(time.RFC3339), t.Description)
	}
	return w.Flush()
}
