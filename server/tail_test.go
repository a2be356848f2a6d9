package server

import (
	"io"
	"os"
	"path/filepath"
	"testing"
)

func TestSeekTail(t *testing.T) {
	long := make([]byte, 0, 40<<10)
	for i := 0; i < 5000; i++ {
		long = append(long, "line of the log\n"...)
	}
	tests := []struct {
		name    string
		content string
		n       int
		want    string
	}{
		{"empty file", "", 3, ""},
		{"fewer lines than asked", "a\nb\n", 5, "a\nb\n"},
		{"exact", "a\nb\nc\n", 3, "a\nb\nc\n"},
		{"last two", "a\nb\nc\n", 2, "b\nc\n"},
		{"last one", "a\nb\nc\n", 1, "c\n"},
		{"no final newline", "a\nb\nc", 1, "c"},
		{"no final newline, two", "a\nb\nc", 2, "b\nc"},
		{"blank lines count", "a\n\n\nb\n", 2, "\nb\n"},
		{"across blocks", string(long), 3, "line of the log\nline of the log\nline of the log\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "log")
			if err := os.WriteFile(path, []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if err := seekTail(f, tt.n); err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(f)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Errorf("tail %d = %q, want %q", tt.n, got, tt.want)
			}
		})
	}
}
