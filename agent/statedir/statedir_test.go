package statedir

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestLockIsExclusive(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	d, err := Lock(dir)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Lock(dir)
	if !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), "pid") {
		t.Fatalf("second Lock = %v, want ErrInUse naming the holder", err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	d2, err := Lock(dir)
	if err != nil {
		t.Fatalf("Lock after Close: %v", err)
	}
	d2.Close()
}

// TestLockHeldAcrossProcesses: a lock held by another process refuses
// this one, and ends with that process.
func TestLockHeldAcrossProcesses(t *testing.T) {
	if os.Getenv("STATEDIR_HOLD") != "" {
		if _, err := Lock(os.Getenv("STATEDIR_HOLD")); err != nil {
			os.Exit(3)
		}
		os.Stdout.WriteString("locked\n")
		select {}
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestLockHeldAcrossProcesses$")
	cmd.Env = append(os.Environ(), "STATEDIR_HOLD="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 7)
	if _, err := out.Read(buf); err != nil || string(buf) != "locked\n" {
		t.Fatalf("holder: %q %v", buf, err)
	}
	if _, err := Lock(dir); !errors.Is(err, ErrInUse) {
		t.Fatalf("Lock while another process holds it = %v", err)
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	d, err := Lock(dir)
	if err != nil {
		t.Fatalf("Lock after the holder died: %v", err)
	}
	d.Close()
}

func TestIdentityKept(t *testing.T) {
	dir := t.TempDir()
	d, err := Lock(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	id, err := d.Identity()
	if err != nil || len(id) != 32 {
		t.Fatalf("Identity = %q, %v", id, err)
	}
	again, err := d.Identity()
	if err != nil || again != id {
		t.Fatalf("second Identity = %q, %v; want %q", again, err, id)
	}
	other := t.TempDir()
	d2, _ := Lock(other)
	defer d2.Close()
	if id2, _ := d2.Identity(); id2 == id {
		t.Fatal("two state dirs got one identity")
	}
}

func TestIdentityCorrupt(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, IdentityName), []byte("short\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d, _ := Lock(dir)
	defer d.Close()
	if _, err := d.Identity(); err == nil || !strings.Contains(err.Error(), "remove the file") {
		t.Fatalf("Identity = %v", err)
	}
}
