package store

import (
	"strings"
	"testing"
	"time"

	"github.com/allex-go/allex/lanwire"
)

func TestStores(t *testing.T) {
	impls := []struct {
		name string
		open func(t *testing.T) (Store, func() Store)
	}{
		{"bolt", func(t *testing.T) (Store, func() Store) {
			dir := t.TempDir()
			s, err := OpenBolt(dir)
			if err != nil {
				t.Fatal(err)
			}
			return s, func() Store {
				if err := s.Close(); err != nil {
					t.Fatal(err)
				}
				s2, err := OpenBolt(dir)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = s2.Close() })
				return s2
			}
		}},
		{"memory", func(t *testing.T) (Store, func() Store) {
			s := NewMemory()
			return s, func() Store { return s }
		}},
	}
	for _, impl := range impls {
		t.Run(impl.name, func(t *testing.T) {
			s, reopen := impl.open(t)
			now := time.Now().UTC().Truncate(time.Millisecond)
			n1 := Need{Need: lanwire.Need{Instance: "a", Module: "m", Protocols: []string{"tcp"}}, CreatedAt: now, Origin: "api"}
			n2 := Need{Need: lanwire.Need{Instance: "b", Module: "m"}, Attempts: 2, NotBefore: now, LastError: "x"}
			if err := s.PutNeed(n1); err != nil {
				t.Fatal(err)
			}
			if err := s.PutNeeds([]Need{n2}); err != nil {
				t.Fatal(err)
			}
			svc := Service{Record: lanwire.ServiceRecord{Instance: "a", Module: "m", MachineID: "m1", Address: "127.0.0.1", PID: 3, Ports: lanwire.Ports{"tcp": 5}}, Need: n1.Need, Origin: "api"}
			if err := s.Publish(svc); err != nil {
				t.Fatal(err)
			}
			s = reopen()
			needs, svcs, err := s.Load()
			if err != nil {
				t.Fatal(err)
			}
			if len(needs) != 1 || needs[0].Need.Instance != "b" || needs[0].Attempts != 2 || needs[0].LastError != "x" {
				t.Fatalf("needs = %+v", needs)
			}
			if len(svcs) != 1 || svcs[0].Record.Ports["tcp"] != 5 || svcs[0].Need.Protocols[0] != "tcp" {
				t.Fatalf("services = %+v", svcs)
			}
			if err := s.Unpublish("a", n1); err != nil {
				t.Fatal(err)
			}
			if err := s.DeleteNeed("b"); err != nil {
				t.Fatal(err)
			}
			needs, svcs, err = s.Load()
			if err != nil || len(needs) != 1 || needs[0].Need.Instance != "a" || len(svcs) != 0 {
				t.Fatalf("after unpublish: %+v %+v %v", needs, svcs, err)
			}
			if err := s.PutService(svc); err != nil {
				t.Fatal(err)
			}
			if err := s.DeleteService("a"); err != nil {
				t.Fatal(err)
			}
			if _, svcs, _ = s.Load(); len(svcs) != 0 {
				t.Fatalf("services = %+v", svcs)
			}
		})
	}
}

func TestBoltLocked(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenBolt(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	_, err = OpenBolt(dir)
	if err == nil || !strings.Contains(err.Error(), "locked") {
		t.Fatalf("second open: %v, want a locked error", err)
	}
}
