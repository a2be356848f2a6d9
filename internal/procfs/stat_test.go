//go:build !windows

package procfs

import (
	"os"
	"runtime"
	"testing"
)

func TestParseStat(t *testing.T) {
	tests := []struct {
		in   string
		want Stat
		ok   bool
	}{
		{"123 (sleep) S 1 123 123 0 -1", Stat{State: 'S', Ppid: 1, Pgrp: 123}, true},
		{"123 (a) b) (c) Z 1 77 77 0", Stat{State: 'Z', Ppid: 1, Pgrp: 77}, true},
		{"123 (x y) R 5 9", Stat{State: 'R', Ppid: 5, Pgrp: 9}, true},
		{"7 (x) S 1 7 7 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 1000 10", Stat{State: 'S', Ppid: 1, Pgrp: 7, StartTime: 98765, CPUTicks: 3, hasCPU: true}, true},
		{"123 (x) R 5", Stat{}, false},
		{"garbage", Stat{}, false},
		{"1 (x) RR 1 2", Stat{}, false},
		{"1 (x) R 1 notanumber", Stat{}, false},
		{"1 (x) R nan 2", Stat{}, false},
	}
	for _, tc := range tests {
		got, ok := ParseStat([]byte(tc.in))
		if got != tc.want || ok != tc.ok {
			t.Errorf("ParseStat(%q) = %+v %v, want %+v %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func TestParseSteal(t *testing.T) {
	for _, tc := range []struct {
		stat string
		want uint64
		bad  bool
	}{
		{stat: "cpu  1257555 0 940699 7271271 40647 0 31653 40820 0 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n", want: 40820},
		{stat: "cpu 1 2 3 4 5 6 7 0\n", want: 0},
		{stat: "cpu 1 2 3 4 5 6 7\n", bad: true},
		{stat: "cpu0 1 2 3 4 5 6 7 8 9\n", bad: true},
		{stat: "cpu 1 2 3 4 5 6 7 x\n", bad: true},
		{stat: "", bad: true},
	} {
		got, err := ParseSteal(tc.stat)
		if (err != nil) != tc.bad || got != tc.want {
			t.Errorf("ParseSteal(%q) = %d, %v", tc.stat, got, err)
		}
	}
}

func TestReadStatSelf(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("no /proc")
	}
	st, err := ReadStat(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if !st.Live() || st.StartTime == 0 || st.Pgrp <= 0 {
		t.Fatalf("own stat %+v", st)
	}
	if alive, err := GroupAlive(st.Pgrp); !alive || err != nil {
		t.Fatalf("GroupAlive(own group %d) = %v, %v", st.Pgrp, alive, err)
	}
	if _, err := ReadStat(-1); err == nil {
		t.Fatal("ReadStat(-1) succeeded")
	}
}
