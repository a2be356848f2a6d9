package adminclient_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/allex-go/allex/lanmanager"
	"github.com/allex-go/allex/lanmanager/adminapi"
	"github.com/allex-go/allex/lanmanager/adminclient"
	"github.com/allex-go/allex/lanmanager/lanmanagertest"
	"github.com/allex-go/allex/lanmanager/store"
	"github.com/allex-go/allex/lanwire"
)

func startServer(t *testing.T) string {
	t.Helper()
	return "http://" + lanmanagertest.Start(t, lanmanager.Config{}).Addr().String()
}

func TestClient(t *testing.T) {
	base := startServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c := adminclient.New(base+"/", "tok")
	if err := c.AddNeed(ctx, lanwire.Need{Instance: "w1", Module: "web"}); err != nil {
		t.Fatal(err)
	}
	needs, err := c.Needs(ctx)
	if err != nil || len(needs) != 1 || needs[0].State != adminapi.StatePending || needs[0].Origin != "api" {
		t.Fatalf("Needs = %+v, %v", needs, err)
	}
	if ms, err := c.Machines(ctx); err != nil || len(ms) != 0 {
		t.Fatalf("Machines = %+v, %v", ms, err)
	}
	if svcs, err := c.Services(ctx, "web", "w1"); err != nil || len(svcs) != 0 {
		t.Fatalf("Services = %+v, %v", svcs, err)
	}

	tests := []struct {
		name string
		call func() error
		want error
	}{
		{"duplicate", func() error { return c.AddNeed(ctx, lanwire.Need{Instance: "w1", Module: "web"}) }, adminclient.ErrConflict},
		{"invalid", func() error { return c.AddNeed(ctx, lanwire.Need{Instance: "", Module: "web"}) }, adminclient.ErrInvalid},
		{"remove unknown", func() error { return c.RemoveNeed(ctx, "nope") }, adminclient.ErrNotFound},
		{"service unknown", func() error { _, err := c.Service(ctx, "w1"); return err }, adminclient.ErrNotFound},
		{"bad token", func() error { _, err := adminclient.New(base, "x").Needs(ctx); return err }, adminclient.ErrUnauthorized},
		{"bad token watch", func() error {
			return adminclient.New(base, "").Watch(ctx, "", func(adminapi.ServiceEvent) error { return nil })
		}, adminclient.ErrUnauthorized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			var he *adminclient.HTTPError
			if !errors.Is(err, tt.want) || !errors.As(err, &he) || he.Message == "" {
				t.Fatalf("err = %v, want %v with the server's message", err, tt.want)
			}
		})
	}
	if err := c.RemoveNeed(ctx, "w1"); err != nil {
		t.Fatal(err)
	}
	if needs, _ := c.Needs(ctx); len(needs) != 0 {
		t.Fatalf("Needs after remove = %+v", needs)
	}
}

func TestWatchEndsWithServer(t *testing.T) {
	srv, err := lanmanager.New(lanmanager.Config{Addr: "127.0.0.1:0", Token: "tok", Store: store.NewMemory()})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	c := adminclient.New("http://"+srv.Addr().String(), "tok")
	watching := make(chan struct{})
	watchErr := make(chan error, 1)
	go func() {
		// Established or refused, Watch must end with an error once the
		// server stops, never hang.
		watchErr <- c.Watch(context.Background(), "", func(adminapi.ServiceEvent) error { return nil })
	}()
	go func() {
		defer close(watching)
		for range 1000 {
			if _, err := c.Needs(context.Background()); err == nil {
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	<-watching
	cancel()
	select {
	case err := <-watchErr:
		if err == nil {
			t.Fatal("Watch returned nil")
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Watch did not end when the server stopped")
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestFollowsTheLeader: a standby's 503 naming the leader is followed
// once, with the request's body; a 503 naming no usable leader, or a
// chain of standbys, is an error.
func TestFollowsTheLeader(t *testing.T) {
	leader := startServer(t)
	standby := func(names string) string {
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set(adminclient.LeaderHeader, names)
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte(`{"error":"standby LAN manager"}`))
		}))
		t.Cleanup(s.Close)
		return s.URL
	}
	ctx := context.Background()
	c := adminclient.New(standby(leader), "tok")
	if err := c.AddNeed(ctx, lanwire.Need{Instance: "a", Module: "web", Protocols: []string{"tcp"}}); err != nil {
		t.Fatalf("through a standby: %v", err)
	}
	if ns, err := adminclient.New(leader, "tok").Needs(ctx); err != nil || len(ns) != 1 {
		t.Fatalf("the leader has %d needs (%v), want the one added through the standby", len(ns), err)
	}
	for _, bad := range []string{"", "ftp://x:1", leader + "/path", standby(standby(leader))} {
		_, err := adminclient.New(standby(bad), "tok").Needs(ctx)
		var he *adminclient.HTTPError
		if !errors.As(err, &he) || he.Status != http.StatusServiceUnavailable {
			t.Errorf("standby naming %q: %v, want the 503", bad, err)
		}
	}
}
