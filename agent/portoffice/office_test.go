package portoffice

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// freeBlock finds n consecutive ports that can all be bound right now.
// It searches below Linux's ephemeral range so that port-0 listeners of
// concurrently running tests are unlikely to land in it.
func freeBlock(tb testing.TB, n int) uint16 {
	tb.Helper()
	for attempt := 0; attempt < 200; attempt++ {
		base := 20000 + rand.IntN(12000-n)
		ok := true
		for p := base; p < base+n && ok; p++ {
			l, err := net.Listen("tcp", ":"+strconv.Itoa(p))
			if err != nil {
				ok = false
				break
			}
			l.Close()
		}
		if ok {
			return uint16(base)
		}
	}
	tb.Fatalf("no block of %d free ports found", n)
	return 0
}

// occupy listens on host:port as "another program" until the test ends.
func occupy(t *testing.T, host string, port uint16) {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(int(port))))
	if err != nil {
		t.Fatalf("occupy %s:%d: %v", host, port, err)
	}
	t.Cleanup(func() { l.Close() })
}

func ipv6Loopback() bool {
	l, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		return false
	}
	l.Close()
	return true
}

func TestNew(t *testing.T) {
	tests := []struct {
		name    string
		ranges  map[string]Range
		opts    []Option
		wantErr string
	}{
		{"ok", map[string]Range{"tcp": {15000, 15999}, "http": {16000, 16999}, "ws": {17000, 17999}}, nil, ""},
		{"single port", map[string]Range{"tcp": {15000, 15000}}, nil, ""},
		{"top of port space", map[string]Range{"tcp": {65000, 65535}}, nil, ""},
		{"bind host loopback", map[string]Range{"tcp": {15000, 15999}}, []Option{WithBindHost("127.0.0.1")}, ""},
		{"no ranges", nil, nil, "no port ranges"},
		{"empty protocol", map[string]Range{"": {1, 2}}, nil, "empty protocol name"},
		{"zero start", map[string]Range{"tcp": {0, 10}}, nil, "tcp range 0-10: start must be 1-65535"},
		{"end before start", map[string]Range{"http": {100, 99}}, nil, "http range 100-99: end before start"},
		{"overlap", map[string]Range{"tcp": {15000, 16000}, "http": {16000, 16999}}, nil, "tcp range 15000-16000 overlaps http range 16000-16999"},
		{"contained", map[string]Range{"tcp": {15000, 16000}, "ws": {15500, 15600}}, nil, "tcp range 15000-16000 overlaps ws range 15500-15600"},
		{"bind host not an IP", map[string]Range{"tcp": {1, 2}}, []Option{WithBindHost("localhost")}, `bind host "localhost": want an IP address`},
		{"bind host not local", map[string]Range{"tcp": {1, 2}}, []Option{WithBindHost("192.0.2.1")}, `bind host "192.0.2.1" cannot be bound`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, err := New(tt.ranges, tt.opts...)
			if tt.wantErr == "" {
				if err != nil || o == nil {
					t.Fatalf("New: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("New error = %v, want it to contain %q", err, tt.wantErr)
			}
		})
	}
}

func TestAllocate(t *testing.T) {
	type listener struct {
		host string
		off  uint16
	}
	tests := []struct {
		name     string
		bindHost string
		held     []uint16   // offsets held by owner "other" before the test
		foreign  []listener // offsets another program listens on
		want     []uint16   // offsets the successive Allocate calls return
		needIPv6 bool
	}{
		{name: "first free port", want: []uint16{0, 1, 2}},
		{name: "skip held ports", held: []uint16{0, 1, 3}, want: []uint16{2, 4, 5}},
		{name: "skip listener on 127.0.0.1", foreign: []listener{{"127.0.0.1", 0}}, want: []uint16{1, 2}},
		{name: "skip listener on 0.0.0.0", foreign: []listener{{"0.0.0.0", 0}, {"0.0.0.0", 2}}, want: []uint16{1, 3}},
		{name: "skip listener on ::1", foreign: []listener{{"::1", 1}}, want: []uint16{0, 2}, needIPv6: true},
		{name: "skip listener on ::", foreign: []listener{{"::", 0}}, want: []uint16{1}, needIPv6: true},
		{name: "bind host 127.0.0.1 sees loopback listener", bindHost: "127.0.0.1", foreign: []listener{{"127.0.0.1", 0}}, want: []uint16{1}},
		{name: "bind host 127.0.0.1 sees wildcard listener", bindHost: "127.0.0.1", foreign: []listener{{"0.0.0.0", 0}}, want: []uint16{1}},
		{name: "bind host ::1 sees loopback listener", bindHost: "::1", foreign: []listener{{"::1", 0}}, want: []uint16{1}, needIPv6: true},
		{name: "bind host ::1 sees dual-stack wildcard listener", bindHost: "::1", foreign: []listener{{"::", 1}}, want: []uint16{0, 2}, needIPv6: true},
		{name: "held and foreign mixed", held: []uint16{0}, foreign: []listener{{"127.0.0.1", 1}}, want: []uint16{2, 3}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.needIPv6 && !ipv6Loopback() {
				t.Skip("no IPv6 loopback")
			}
			base := freeBlock(t, 8)
			var opts []Option
			if tt.bindHost != "" {
				opts = append(opts, WithBindHost(tt.bindHost))
			}
			o, err := New(map[string]Range{"tcp": {base, base + 7}}, opts...)
			if err != nil {
				t.Fatal(err)
			}
			for _, off := range tt.held {
				if err := o.AllocateFixed("tcp", base+off, "other"); err != nil {
					t.Fatal(err)
				}
			}
			for _, l := range tt.foreign {
				occupy(t, l.host, base+l.off)
			}
			for i, off := range tt.want {
				p, err := o.Allocate("tcp", "me")
				if err != nil {
					t.Fatalf("Allocate #%d: %v", i, err)
				}
				if p != base+off {
					t.Fatalf("Allocate #%d = %d (offset %d), want offset %d", i, p, p-base, off)
				}
			}
			var want []uint16
			for _, off := range tt.want {
				want = append(want, base+off)
			}
			if got := o.Held("me")["tcp"]; !reflect.DeepEqual(got, want) {
				t.Fatalf("Held = %v, want %v", got, want)
			}
		})
	}
}

func TestAllocateBadInput(t *testing.T) {
	o, err := New(map[string]Range{"tcp": {15000, 15010}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := o.Allocate("udp", "me"); !errors.Is(err, ErrUnknownProtocol) || !strings.Contains(err.Error(), `"udp"`) {
		t.Fatalf("Allocate(udp) = %v, want ErrUnknownProtocol naming udp", err)
	}
	if err := o.AllocateFixed("udp", 15000, "me"); !errors.Is(err, ErrUnknownProtocol) {
		t.Fatalf("AllocateFixed(udp) = %v, want ErrUnknownProtocol", err)
	}
	if _, err := o.Allocate("tcp", ""); err == nil || !strings.Contains(err.Error(), "empty owner") {
		t.Fatalf("Allocate with empty owner = %v", err)
	}
	if err := o.AllocateFixed("tcp", 15000, ""); err == nil || !strings.Contains(err.Error(), "empty owner") {
		t.Fatalf("AllocateFixed with empty owner = %v", err)
	}
	if n := o.Free("udp"); n != 0 {
		t.Fatalf("Free(udp) = %d", n)
	}
}

func TestRelease(t *testing.T) {
	base := freeBlock(t, 4)
	tests := []struct {
		name    string
		proto   string
		off     uint16
		owner   string
		wantErr string // "" = success
	}{
		{"owner releases", "tcp", 0, "a", ""},
		{"wrong owner", "tcp", 0, "b", `held by "a"`},
		{"wrong protocol", "http", 0, "a", "held as tcp"},
		{"not held", "tcp", 1, "a", "port not held"},
		{"never allocated port outside ranges", "tcp", 3, "a", "port not held"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, err := New(map[string]Range{"tcp": {base, base + 1}, "http": {base + 2, base + 2}})
			if err != nil {
				t.Fatal(err)
			}
			p, err := o.Allocate("tcp", "a")
			if err != nil || p != base {
				t.Fatalf("Allocate = %d, %v", p, err)
			}
			err = o.Release(tt.proto, base+tt.off, tt.owner)
			if tt.wantErr != "" {
				if !errors.Is(err, ErrNotHeld) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Release = %v, want ErrNotHeld containing %q", err, tt.wantErr)
				}
				if got := o.Held("a")["tcp"]; !reflect.DeepEqual(got, []uint16{base}) {
					t.Fatalf("after refused release Held(a) = %v", got)
				}
				return
			}
			if err != nil {
				t.Fatalf("Release: %v", err)
			}
			if len(o.Held("a")) != 0 {
				t.Fatalf("Held(a) = %v after release", o.Held("a"))
			}
			// The released port is the first free one again.
			if p, err := o.Allocate("tcp", "b"); err != nil || p != base {
				t.Fatalf("re-Allocate = %d, %v; want %d", p, err, base)
			}
			if err := o.Release("tcp", base, "a"); !errors.Is(err, ErrNotHeld) {
				t.Fatalf("second release by old owner = %v", err)
			}
		})
	}
}

func TestReleaseOwnerAndHeld(t *testing.T) {
	base := freeBlock(t, 8)
	o, err := New(map[string]Range{"tcp": {base, base + 2}, "http": {base + 3, base + 5}})
	if err != nil {
		t.Fatal(err)
	}
	must := func(p uint16, err error) uint16 {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	a1 := must(o.Allocate("tcp", "a"))
	b1 := must(o.Allocate("tcp", "b"))
	a2 := must(o.Allocate("http", "a"))
	if err := o.AllocateFixed("http", base+7, "a"); err != nil {
		t.Fatal(err)
	}
	want := map[string][]uint16{"tcp": {a1}, "http": {a2, base + 7}}
	if got := o.Held("a"); !reflect.DeepEqual(got, want) {
		t.Fatalf("Held(a) = %v, want %v", got, want)
	}
	if got := o.ReleaseOwner("a"); !reflect.DeepEqual(got, []uint16{a1, a2, base + 7}) {
		t.Fatalf("ReleaseOwner(a) = %v", got)
	}
	if got := o.Held("a"); len(got) != 0 {
		t.Fatalf("Held(a) after ReleaseOwner = %v", got)
	}
	if got := o.Held("b"); !reflect.DeepEqual(got, map[string][]uint16{"tcp": {b1}}) {
		t.Fatalf("Held(b) = %v", got)
	}
	if got := o.ReleaseOwner("nobody"); got != nil {
		t.Fatalf("ReleaseOwner(nobody) = %v", got)
	}
	if p := must(o.Allocate("tcp", "c")); p != a1 {
		t.Fatalf("after ReleaseOwner Allocate = %d, want %d", p, a1)
	}
}

func TestAllocateFixed(t *testing.T) {
	base := freeBlock(t, 6)
	tests := []struct {
		name    string
		port    uint16
		setup   func(t *testing.T, o *Office)
		wantErr error
		wantMsg string
	}{
		{name: "inside range", port: base},
		{name: "outside range", port: base + 5},
		{name: "port 0", port: 0, wantMsg: "port 0 is not a port"},
		{
			name: "held by another owner", port: base + 1, wantErr: ErrInUse, wantMsg: `held by "other"`,
			setup: func(t *testing.T, o *Office) {
				if err := o.AllocateFixed("tcp", base+1, "other"); err != nil {
					t.Fatal(err)
				}
			},
		},
		{
			name: "held by the same owner", port: base, wantErr: ErrInUse, wantMsg: `held by "me"`,
			setup: func(t *testing.T, o *Office) {
				if p, err := o.Allocate("tcp", "me"); err != nil || p != base {
					t.Fatal(p, err)
				}
			},
		},
		{
			name: "bound by another program", port: base + 4, wantErr: ErrInUse, wantMsg: "by another program",
			setup: func(t *testing.T, o *Office) { occupy(t, "127.0.0.1", base+4) },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, err := New(map[string]Range{"tcp": {base, base + 3}})
			if err != nil {
				t.Fatal(err)
			}
			if tt.setup != nil {
				tt.setup(t, o)
			}
			before := o.Held("me")
			err = o.AllocateFixed("tcp", tt.port, "me")
			if tt.wantMsg == "" {
				if err != nil {
					t.Fatalf("AllocateFixed: %v", err)
				}
				if got := o.Held("me")["tcp"]; !reflect.DeepEqual(got, []uint16{tt.port}) {
					t.Fatalf("Held = %v", got)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantMsg) {
				t.Fatalf("AllocateFixed = %v, want error containing %q", err, tt.wantMsg)
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Fatalf("AllocateFixed = %v, want %v", err, tt.wantErr)
			}
			if after := o.Held("me"); !reflect.DeepEqual(before, after) {
				t.Fatalf("Held changed on error: %v -> %v", before, after)
			}
		})
	}
}

func TestExhausted(t *testing.T) {
	base := freeBlock(t, 3)
	tests := []struct {
		name     string
		foreign  bool // a listener occupies the last port
		wantHeld int
	}{
		{"all held", false, 3},
		{"last port used by another program", true, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, err := New(map[string]Range{"http": {base, base + 2}})
			if err != nil {
				t.Fatal(err)
			}
			if tt.foreign {
				occupy(t, "0.0.0.0", base+2)
			}
			for i := 0; i < tt.wantHeld; i++ {
				if _, err := o.Allocate("http", "me"); err != nil {
					t.Fatal(err)
				}
			}
			held, usage := o.Held("me"), o.Usage()
			_, err = o.Allocate("http", "late")
			if !errors.Is(err, ErrExhausted) {
				t.Fatalf("Allocate = %v, want ErrExhausted", err)
			}
			want := fmt.Sprintf("no free http port in %d-%d (%d held, %d used by other programs)",
				base, base+2, tt.wantHeld, 3-tt.wantHeld)
			if !strings.Contains(err.Error(), want) {
				t.Fatalf("error %q does not contain %q", err, want)
			}
			if !reflect.DeepEqual(held, o.Held("me")) || !reflect.DeepEqual(usage, o.Usage()) || len(o.Held("late")) != 0 {
				t.Fatalf("state changed by failed Allocate")
			}
		})
	}
}

// TestTopOfPortSpace checks that a range ending at 65535 neither wraps to
// port 0 nor loops forever once it is full.
func TestTopOfPortSpace(t *testing.T) {
	tests := []Range{{65535, 65535}, {65533, 65535}}
	for _, r := range tests {
		t.Run(r.String(), func(t *testing.T) {
			o, err := New(map[string]Range{"ws": r})
			if err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() {
				seen := map[uint16]bool{}
				for i := 0; i < 10; i++ {
					p, err := o.Allocate("ws", "me")
					if errors.Is(err, ErrExhausted) {
						done <- nil
						return
					}
					if err != nil {
						done <- err
						return
					}
					if !r.contains(p) || seen[p] {
						done <- fmt.Errorf("Allocate = %d, outside %s or repeated", p, r)
						return
					}
					seen[p] = true
				}
				done <- errors.New("range never exhausted")
			}()
			select {
			case err := <-done:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(60 * time.Second):
				t.Fatal("Allocate did not return: loops at the top of the port space")
			}
		})
	}
}

func TestConcurrentAllocate(t *testing.T) {
	const n = 1000
	base := freeBlock(t, 1)
	// The range is larger than n so that ports other programs happen to use
	// inside it do not make the test fail.
	end := base + n + 500
	o, err := New(map[string]Range{"tcp": {base, end}})
	if err != nil {
		t.Fatal(err)
	}
	ports := make([]uint16, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ports[i], errs[i] = o.Allocate("tcp", "owner"+strconv.Itoa(i))
		}()
	}
	wg.Wait()
	seen := map[uint16]int{}
	for i, p := range ports {
		if errs[i] != nil {
			t.Fatalf("Allocate #%d: %v", i, errs[i])
		}
		if j, dup := seen[p]; dup {
			t.Fatalf("port %d handed to owner%d and owner%d", p, j, i)
		}
		seen[p] = i
		if got := o.Held("owner" + strconv.Itoa(i))["tcp"]; !reflect.DeepEqual(got, []uint16{p}) {
			t.Fatalf("Held(owner%d) = %v, want [%d]", i, got, p)
		}
	}
	if u := o.Usage(); u[0].InUse != n {
		t.Fatalf("Usage = %+v, want %d in use", u, n)
	}
	if f := o.Free("tcp"); f != int(end-base+1)-n {
		t.Fatalf("Free = %d", f)
	}
}

func TestUsageAndFree(t *testing.T) {
	base := freeBlock(t, 30)
	o, err := New(map[string]Range{
		"ws":   {base + 20, base + 29},
		"tcp":  {base, base + 9},
		"http": {base + 10, base + 19},
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := o.Allocate("tcp", "a"); err != nil {
		t.Fatal(err)
	}
	// A fixed tcp port inside the ws range uses up a ws range port.
	if err := o.AllocateFixed("tcp", base+25, "a"); err != nil {
		t.Fatal(err)
	}
	want := []Usage{
		{"tcp", base, base + 9, 1},
		{"http", base + 10, base + 19, 0},
		{"ws", base + 20, base + 29, 1},
	}
	if got := o.Usage(); !reflect.DeepEqual(got, want) {
		t.Fatalf("Usage = %+v, want %+v", got, want)
	}
	for proto, free := range map[string]int{"tcp": 9, "http": 10, "ws": 9} {
		if got := o.Free(proto); got != free {
			t.Errorf("Free(%s) = %d, want %d", proto, got, free)
		}
	}
	for i := 0; i < 9; i++ {
		if p, err := o.Allocate("ws", "b"); err != nil || p == base+25 {
			t.Fatalf("ws Allocate = %d, %v", p, err)
		}
	}
	if got := o.Free("ws"); got != 0 {
		t.Fatalf("Free(ws) = %d", got)
	}
}

func benchOffice(b *testing.B, size int) (*Office, uint16) {
	base := freeBlock(b, size)
	o, err := New(map[string]Range{"tcp": {base, base + uint16(size) - 1}})
	if err != nil {
		b.Fatal(err)
	}
	return o, base
}

func BenchmarkAllocateRelease(b *testing.B) {
	o, _ := benchOffice(b, 4)
	for b.Loop() {
		p, err := o.Allocate("tcp", "me")
		if err != nil {
			b.Fatal(err)
		}
		if err := o.Release("tcp", p, "me"); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAllocate100Held(b *testing.B) {
	o, base := benchOffice(b, 110)
	for i := uint16(0); i < 100; i++ {
		if err := o.AllocateFixed("tcp", base+i, "held"); err != nil {
			b.Fatal(err)
		}
	}
	for b.Loop() {
		p, err := o.Allocate("tcp", "me")
		if err != nil {
			b.Fatal(err)
		}
		if err := o.Release("tcp", p, "me"); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAllocateParallel(b *testing.B) {
	o, _ := benchOffice(b, 300)
	var id sync.Mutex
	next := 0
	b.RunParallel(func(pb *testing.PB) {
		id.Lock()
		owner := "w" + strconv.Itoa(next)
		next++
		id.Unlock()
		for pb.Next() {
			p, err := o.Allocate("tcp", owner)
			if err != nil {
				b.Error(err)
				return
			}
			if err := o.Release("tcp", p, owner); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// TestInUseCountsWords checks the word-at-a-time count against a port by
// port one, for ranges that start, end or both inside a 64-port word, span
// many words, or touch the last port.
func TestInUseCountsWords(t *testing.T) {
	o := &Office{held: map[uint16]holding{}}
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 3000; i++ {
		o.hold(uint16(rng.IntN(65536)), holding{proto: "tcp", owner: "x"})
	}
	for _, p := range []uint16{0, 63, 64, 65535, 65472} {
		o.hold(p, holding{proto: "tcp", owner: "x"})
	}
	for _, r := range []Range{
		{0, 0}, {0, 63}, {0, 64}, {1, 62}, {63, 64}, {64, 127}, {100, 100},
		{100, 1000}, {1000, 1063}, {65472, 65535}, {65535, 65535}, {65000, 65535}, {0, 65535},
	} {
		want := 0
		for p := int(r.Start); p <= int(r.End); p++ {
			if _, ok := o.held[uint16(p)]; ok {
				want++
			}
		}
		if got := o.inUseLocked(r); got != want {
			t.Errorf("inUseLocked(%v) = %d, want %d", r, got, want)
		}
	}
}
