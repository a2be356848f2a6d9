// Package lanmanagertest runs in-process LAN managers for other packages'
// tests: on a free loopback port, with a memory store, stopped (and
// checked to stop cleanly) when the test ends.
package lanmanagertest

import (
	"context"
	"testing"
	"time"

	"github.com/allex-go/allex/lanmanager"
	"github.com/allex-go/allex/lanmanager/store"
	"github.com/allex-go/allex/lanpki"
)

// Start runs a LAN manager with cfg until the test ends. Addr defaults to
// 127.0.0.1:0, Store to a memory store and Token to "tok".
func Start(t testing.TB, cfg lanmanager.Config) *lanmanager.Server {
	t.Helper()
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	if cfg.Store == nil {
		cfg.Store = store.NewMemory()
	}
	if cfg.Token == "" {
		cfg.Token = "tok"
	}
	srv, err := lanmanager.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("lanmanager Run: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Error("lanmanager did not stop")
		}
	})
	return srv
}

// WithTLS makes cfg serve TLS with a certificate from ca, and issue
// masters' certificates from it, as allexlanmanager does with its own CA.
func WithTLS(t testing.TB, cfg lanmanager.Config, ca *lanpki.CA) lanmanager.Config {
	t.Helper()
	cert, err := ca.IssueServer([]string{"127.0.0.1"}, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cfg.TLS, cfg.CA = lanpki.ServerConfig(cert, ca.Pool()), ca
	return cfg
}
