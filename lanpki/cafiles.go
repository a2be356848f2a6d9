package lanpki

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

const (
	caCertFile = "ca.crt"
	caKeyFile  = "ca.key"
)

// A process that lost the race to create the CA waits this long, at most,
// for the winner's certificate to follow its key.
const (
	awaitTries = 100
	awaitStep  = 10 * time.Millisecond
)

// errNoCA says neither file exists, so the CA is to be created.
var errNoCA = errors.New("neither " + caCertFile + " nor " + caKeyFile + " exists")

// halfCAError says one of the CA's files exists without the other.
type halfCAError struct{ dir, have, missing string }

func (e *halfCAError) Error() string {
	return fmt.Sprintf("%s exists but %s does not (restore %[2]s, or remove %[1]s to make a new CA)",
		filepath.Join(e.dir, e.have), filepath.Join(e.dir, e.missing))
}

// LoadOrCreateCA reads dir/ca.crt and dir/ca.key, or creates both when
// neither exists. Processes starting at once agree on one CA: files are
// written aside and hard-linked into place, which fails rather than
// overwrite, and the losers load the winner's.
func LoadOrCreateCA(dir string, now time.Time) (ca *CA, created bool, err error) {
	ca, err = loadCAFiles(dir)
	if !errors.Is(err, errNoCA) {
		return ca, false, err
	}
	return createCAFiles(dir, now)
}

func loadCAFiles(dir string) (*CA, error) {
	certPEM, certErr := os.ReadFile(filepath.Join(dir, caCertFile))
	keyPEM, keyErr := os.ReadFile(filepath.Join(dir, caKeyFile))
	noCert, noKey := errors.Is(certErr, fs.ErrNotExist), errors.Is(keyErr, fs.ErrNotExist)
	switch {
	case noCert && noKey:
		return nil, errNoCA
	case noCert:
		return nil, &halfCAError{dir, caKeyFile, caCertFile}
	case noKey:
		return nil, &halfCAError{dir, caCertFile, caKeyFile}
	case certErr != nil:
		return nil, certErr
	case keyErr != nil:
		return nil, keyErr
	}
	ca, err := LoadCA(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	return ca, nil
}

// createCAFiles links the key into place first and the certificate last,
// so the pair is complete once ca.crt exists.
func createCAFiles(dir string, now time.Time) (*CA, bool, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, false, err
	}
	ca, err := NewCA(now)
	if err != nil {
		return nil, false, err
	}
	keyPEM, err := ca.KeyPEM()
	if err != nil {
		return nil, false, err
	}
	keyTmp, err := writeTemp(dir, caKeyFile, keyPEM, 0o600)
	if err != nil {
		return nil, false, err
	}
	defer os.Remove(keyTmp)
	certTmp, err := writeTemp(dir, caCertFile, ca.CertPEM, 0o644)
	if err != nil {
		return nil, false, err
	}
	defer os.Remove(certTmp)
	return linkCAFiles(dir, ca, keyTmp, certTmp)
}

func linkCAFiles(dir string, ca *CA, keyTmp, certTmp string) (*CA, bool, error) {
	keyPath := filepath.Join(dir, caKeyFile)
	if err := os.Link(keyTmp, keyPath); err != nil {
		if errors.Is(err, fs.ErrExist) {
			ca, err := awaitCAFiles(dir)
			return ca, false, err
		}
		return nil, false, err
	}
	if err := os.Link(certTmp, filepath.Join(dir, caCertFile)); err != nil {
		os.Remove(keyPath) // ours, and useless without its certificate
		return nil, false, err
	}
	syncDir(dir)
	return ca, true, nil
}

// awaitCAFiles loads the CA another process is creating: its key is in
// place, and its certificate may lag a moment behind.
func awaitCAFiles(dir string) (*CA, error) {
	for i := 0; ; i++ {
		ca, err := loadCAFiles(dir)
		var half *halfCAError
		if !errors.As(err, &half) || half.missing != caCertFile || i == awaitTries {
			return ca, err
		}
		time.Sleep(awaitStep)
	}
}

// writeTemp writes data to a new synced file in dir and returns its name;
// it is linked into place complete, so readers never see part of it.
func writeTemp(dir, base string, data []byte, perm os.FileMode) (string, error) {
	f, err := os.CreateTemp(dir, "."+base+".tmp*")
	if err != nil {
		return "", err
	}
	err = errors.Join(writeSync(f, data, perm), f.Close())
	if err != nil {
		os.Remove(f.Name())
		return "", err
	}
	return f.Name(), nil
}

func writeSync(f *os.File, data []byte, perm os.FileMode) error {
	if err := f.Chmod(perm); err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		return err
	}
	return f.Sync()
}

// syncDir makes the new names durable, so a crash cannot lose a CA that
// certificates were already issued from. It is best effort: Windows cannot
// sync a directory.
func syncDir(dir string) {
	d, err := os.Open(dir)
	if err != nil {
		return
	}
	_ = d.Sync()
	d.Close()
}
