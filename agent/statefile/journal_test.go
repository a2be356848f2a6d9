package statefile

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/hashicorp/go-hclog"
)

// testLogger returns a logger writing into the returned buffer.
func testLogger() (hclog.Logger, *syncBuffer) {
	var buf syncBuffer
	return hclog.New(&hclog.LoggerOptions{Output: &buf, Level: hclog.Debug}), &buf
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o640); err != nil {
		t.Fatal(err)
	}
}

func fileLines(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	if s == "" {
		return nil
	}
	if !strings.HasSuffix(s, "\n") {
		t.Fatalf("%s does not end in a newline: %q", path, s)
	}
	return strings.Split(strings.TrimSuffix(s, "\n"), "\n")
}

func TestLoad(t *testing.T) {
	tests := []struct {
		name    string
		journal string // "" for no file
		legacy  string // "" for no file
		want    []Entry
		// warns are substrings the log must hold, in this order.
		warns []string
	}{
		{
			name: "no files",
		},
		{
			name:    "add and del replay",
			journal: `{"op":"add","instance":"a","pid":10,"start":100}` + "\n" + `{"op":"add","instance":"b","pid":11,"start":110}` + "\n" + `{"op":"del","instance":"a","pid":10}` + "\n" + `{"op":"add","instance":"a","pid":12,"start":120}` + "\n",
			want:    []Entry{{"a", 12, 120}, {"b", 11, 110}},
		},
		{
			name:    "del of another run of the instance keeps the live one",
			journal: `{"op":"add","instance":"a","pid":12,"start":120}` + "\n" + `{"op":"del","instance":"a","pid":10}` + "\n",
			want:    []Entry{{"a", 12, 120}},
		},
		{
			name:    "torn last line",
			journal: `{"op":"add","instance":"a","pid":10,"start":100}` + "\n" + `{"op":"add","instance":"b","pid":11,"start":110}` + "\n" + `{"op":"add","instance":"c","pid":1`,
			want:    []Entry{{"a", 10, 100}, {"b", 11, 110}},
			warns:   []string{"skipping torn last line", "children.jsonl", "line=3"},
		},
		{
			name:    "last line without newline but whole",
			journal: `{"op":"add","instance":"a","pid":10,"start":100}`,
			want:    []Entry{{"a", 10, 100}},
		},
		{
			name:    "malformed middle line",
			journal: `{"op":"add","instance":"a","pid":10,"start":100}` + "\n" + `{"op":"add","inst` + "\n" + `{"op":"add","instance":"b","pid":11,"start":110}` + "\n",
			want:    []Entry{{"a", 10, 100}, {"b", 11, 110}},
			warns:   []string{"skipping malformed line", "children.jsonl", "line=2"},
		},
		{
			name:    "invalid records",
			journal: `{"op":"put","instance":"a","pid":10}` + "\n" + `{"op":"add","pid":10}` + "\n" + `{"op":"add","instance":"a","pid":0}` + "\n" + "\n" + `[1]` + "\n" + `{"op":"add","instance":"a","pid":3,"start":30,"future":true}` + "\n",
			want:    []Entry{{"a", 3, 30}},
			warns:   []string{"line=1", "unknown op", "line=2", "no instance", "line=3", "line=5"},
		},
		{
			name:   "old children.json format",
			legacy: `[{"instance":"a","pid":10,"start":100},{"instance":"b","pid":11,"start":0}]`,
			want:   []Entry{{"a", 10, 100}, {"b", 11, 0}},
		},
		{
			name:   "old children.json empty",
			legacy: `[]`,
			want:   []Entry{},
		},
		{
			name:   "old children.json unreadable",
			legacy: `[{"instance":`,
			warns:  []string{"ignoring unreadable state file", "children.json"},
		},
		{
			name:    "old children.json and journal",
			legacy:  `[{"instance":"a","pid":10,"start":100}]`,
			journal: `{"op":"add","instance":"b","pid":11,"start":110}` + "\n",
			want:    []Entry{{"a", 10, 100}, {"b", 11, 110}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if tc.journal != "" {
				writeFile(t, filepath.Join(dir, JournalName), tc.journal)
			}
			if tc.legacy != "" {
				writeFile(t, filepath.Join(dir, LegacyName), tc.legacy)
			}
			log, out := testLogger()
			got, err := Load(dir, log)
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if len(got) != 0 || len(tc.want) != 0 {
				if !reflect.DeepEqual(got, tc.want) {
					t.Errorf("Load = %v, want %v", got, tc.want)
				}
			}
			logged := out.String()
			rest := logged
			for _, w := range tc.warns {
				i := strings.Index(rest, w)
				if i < 0 {
					t.Fatalf("log lacks %q (in order); log:\n%s", w, logged)
				}
				rest = rest[i+len(w):]
			}
			if len(tc.warns) == 0 && logged != "" {
				t.Errorf("unexpected log:\n%s", logged)
			}
		})
	}
}

func TestLoadUnreadable(t *testing.T) {
	dir := t.TempDir()
	// A directory where the journal should be cannot be read as a file.
	if err := os.Mkdir(filepath.Join(dir, JournalName), 0o750); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, LegacyName), `[{"instance":"a","pid":10,"start":100}]`)
	got, err := Load(dir, nil)
	if err == nil {
		t.Fatal("Load of an unreadable journal: no error")
	}
	if want := []Entry{{"a", 10, 100}}; !reflect.DeepEqual(got, want) {
		t.Errorf("Load = %v, want the legacy entries %v", got, want)
	}
}

// op is one change of the live set.
type op struct {
	add      bool
	instance string
	pid      int
	start    uint64
}

func add(inst string, pid int, start uint64) op { return op{true, inst, pid, start} }
func del(inst string, pid int) op               { return op{false, inst, pid, 0} }

func apply(j *Journal, ops []op) {
	for _, o := range ops {
		if o.add {
			j.Add(o.instance, o.pid, o.start)
		} else {
			j.Del(o.instance, o.pid)
		}
	}
}

func TestJournalReplay(t *testing.T) {
	tests := []struct {
		name      string
		ops       []op
		want      []Entry
		wantLines int
	}{
		{
			name:      "adds",
			ops:       []op{add("a", 1, 10), add("b", 2, 20)},
			want:      []Entry{{"a", 1, 10}, {"b", 2, 20}},
			wantLines: 2,
		},
		{
			name:      "add then del",
			ops:       []op{add("a", 1, 10), add("b", 2, 20), del("a", 1)},
			want:      []Entry{{"b", 2, 20}},
			wantLines: 3,
		},
		{
			name:      "restart by the supervisor: old pid out, new pid in",
			ops:       []op{add("a", 1, 10), del("a", 1), add("a", 7, 70)},
			want:      []Entry{{"a", 7, 70}},
			wantLines: 3,
		},
		{
			name:      "del of a run that is not live writes nothing",
			ops:       []op{add("a", 1, 10), del("a", 2), del("b", 1), del("a", 1), del("a", 1)},
			want:      nil,
			wantLines: 2,
		},
		{
			name:      "unknown start",
			ops:       []op{add("a", 1, 0)},
			want:      []Entry{{"a", 1, 0}},
			wantLines: 1,
		},
		{
			name:      "odd instance name",
			ops:       []op{add("a \"b\"\n\\é", 1, 10)},
			want:      []Entry{{"a \"b\"\n\\é", 1, 10}},
			wantLines: 1,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			log, out := testLogger()
			j, err := Open(dir, log)
			if err != nil {
				t.Fatal(err)
			}
			defer j.Close()
			apply(j, tc.ops)
			if got := j.Live(); !equalEntries(got, tc.want) {
				t.Errorf("Live = %v, want %v", got, tc.want)
			}
			got, err := Load(dir, log)
			if err != nil {
				t.Fatal(err)
			}
			if !equalEntries(got, tc.want) {
				t.Errorf("Load = %v, want %v", got, tc.want)
			}
			if n := len(fileLines(t, filepath.Join(dir, JournalName))); n != tc.wantLines {
				t.Errorf("journal has %d lines, want %d", n, tc.wantLines)
			}
			if s := out.String(); s != "" {
				t.Errorf("unexpected log:\n%s", s)
			}
		})
	}
}

func equalEntries(a, b []Entry) bool {
	return len(a) == 0 && len(b) == 0 || reflect.DeepEqual(a, b)
}

func TestJournalRecordFormat(t *testing.T) {
	dir := t.TempDir()
	j, err := Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	j.Add("web1", 4242, 123456)
	j.Del("web1", 4242)
	if err := j.f.Sync(); err != nil {
		t.Fatal(err)
	}
	got := fileLines(t, filepath.Join(dir, JournalName))
	want := []string{
		`{"op":"add","instance":"web1","pid":4242,"start":123456}`,
		`{"op":"del","instance":"web1","pid":4242}`,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("journal = %q, want %q", got, want)
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestOpenStartsFresh(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, JournalName), `{"op":"add","instance":"a","pid":10,"start":100}`+"\n")
	writeFile(t, filepath.Join(dir, LegacyName), `[{"instance":"b","pid":11,"start":110}]`)
	j, err := Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	if _, err := os.Stat(filepath.Join(dir, LegacyName)); !os.IsNotExist(err) {
		t.Errorf("old %s still there after Open (stat: %v)", LegacyName, err)
	}
	if got, _ := Load(dir, nil); len(got) != 0 {
		t.Errorf("Load after Open = %v, want nothing", got)
	}
}

func TestCompaction(t *testing.T) {
	for _, live := range []int{0, 1, 50} {
		t.Run(fmt.Sprintf("%d live", live), func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, JournalName)
			j, err := Open(dir, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer j.Close()
			for i := range live {
				j.Add(fmt.Sprintf("live%d", i), 1000+i, uint64(i+1))
			}
			limit := 2*live + compactSlack
			// Churn short runs until the journal is compacted.
			compacted := false
			for i := 0; i < 2*limit && !compacted; i++ {
				before := j.lines
				j.Add("churn", 5000+i, 1)
				j.Del("churn", 5000+i)
				if j.lines > limit {
					t.Fatalf("journal holds %d lines, more than the limit %d", j.lines, limit)
				}
				compacted = j.lines < before
			}
			if !compacted {
				t.Fatal("journal never compacted")
			}
			// The file holds exactly the live set, one add per entry.
			lines := fileLines(t, path)
			if len(lines) != live {
				t.Fatalf("compacted journal has %d lines, want %d: %q", len(lines), live, lines)
			}
			want := j.Live()
			got, err := Load(dir, nil)
			if err != nil {
				t.Fatal(err)
			}
			if !equalEntries(got, want) || len(got) != live {
				t.Fatalf("Load after compaction = %v, want %v", got, want)
			}
			if _, err := os.Stat(path + ".tmp"); !os.IsNotExist(err) {
				t.Errorf("tmp file left behind (stat: %v)", err)
			}
			// Records after the compaction land in the renamed file.
			j.Add("after", 9000, 90)
			if live > 0 {
				j.Del("live0", 1000)
			}
			lines = fileLines(t, path)
			wantLines := live + 1
			if live > 0 {
				wantLines++
			}
			if len(lines) != wantLines {
				t.Errorf("journal after compaction and two records has %d lines, want %d", len(lines), wantLines)
			}
			got, err = Load(dir, nil)
			if err != nil {
				t.Fatal(err)
			}
			if want := j.Live(); !equalEntries(got, want) {
				t.Errorf("Load after appending to the compacted journal = %v, want %v", got, want)
			}
		})
	}
}

func TestConcurrentAdds(t *testing.T) {
	const workers, per = 16, 200
	dir := t.TempDir()
	j, err := Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range per {
				j.Add(fmt.Sprintf("w%d-%d", w, i), w*per+i+1, uint64(i+1))
			}
			for i := 0; i < per; i += 2 {
				j.Del(fmt.Sprintf("w%d-%d", w, i), w*per+i+1)
			}
		})
	}
	wg.Wait()
	var want []Entry
	for w := range workers {
		for i := 1; i < per; i += 2 {
			want = append(want, Entry{fmt.Sprintf("w%d-%d", w, i), w*per + i + 1, uint64(i + 1)})
		}
	}
	sortEntries(want)
	if got := j.Live(); !reflect.DeepEqual(got, want) {
		t.Fatalf("Live has %d entries, want %d", len(got), len(want))
	}
	got, err := Load(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Load has %d entries, want %d", len(got), len(want))
	}
}

func TestClose(t *testing.T) {
	tests := []struct {
		name      string
		ops       []op
		wantLines int
	}{
		{"nothing recorded", nil, 0},
		{"every child exited", []op{add("a", 1, 10), add("b", 2, 20), del("b", 2), del("a", 1)}, 0},
		{"a child still live is kept", []op{add("a", 1, 10), add("b", 2, 20), del("b", 2)}, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			j, err := Open(dir, nil)
			if err != nil {
				t.Fatal(err)
			}
			apply(j, tc.ops)
			if err := j.Close(); err != nil {
				t.Fatal(err)
			}
			if err := j.Close(); err != nil {
				t.Fatalf("second Close: %v", err)
			}
			j.Add("late", 3, 30) // ignored once closed
			path := filepath.Join(dir, JournalName)
			if n := len(fileLines(t, path)); n != tc.wantLines {
				t.Errorf("journal has %d lines after Close, want %d", n, tc.wantLines)
			}
		})
	}
}

func TestNilJournal(t *testing.T) {
	var j *Journal
	j.Add("a", 1, 1)
	j.Del("a", 1)
	if j.Live() != nil {
		t.Error("nil journal has live entries")
	}
	if err := j.Close(); err != nil {
		t.Error(err)
	}
}

func BenchmarkJournalAddDel(b *testing.B) {
	j, err := Open(b.TempDir(), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer j.Close()
	// A master with a hundred children, one of which keeps restarting.
	for i := range 100 {
		j.Add(fmt.Sprintf("live%d", i), 1000+i, uint64(i+1))
	}
	pid := 100000
	for b.Loop() {
		pid++
		j.Add("churn", pid, uint64(pid))
		j.Del("churn", pid)
	}
}
