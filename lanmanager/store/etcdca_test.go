package store_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"encoding/pem"
	"errors"
	"sync"
	"testing"

	"github.com/allex-go/allex/internal/etcdtest"
	"github.com/allex-go/allex/lanmanager/store"
)

// fakeCA returns a create func of a CA of random PEM blocks (EtcdCA does
// not read them), calling arrived first.
func fakeCA(arrived func()) func() ([]byte, []byte, error) {
	return func() ([]byte, []byte, error) {
		arrived()
		block := func(typ string) []byte { return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: []byte(rand.Text())}) }
		return block("CERTIFICATE"), block("PRIVATE KEY"), nil
	}
}

// TestEtcdCAOneForTheLAN: two LAN managers creating the CA at once get
// the same one; the stored value keeps the key sealed; another token
// does not open it; the store's Load ignores it.
func TestEtcdCAOneForTheLAN(t *testing.T) {
	cli := etcdtest.Client(t, etcdtest.Endpoints(etcdtest.Cluster(t, 1)))
	ctx := context.Background()
	// Both creates run before either stores its CA: both found none.
	var both sync.WaitGroup
	both.Add(2)
	arrive := func() { both.Done(); both.Wait() }
	type result struct{ cert, key []byte }
	results := make([]result, 2)
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for i := range 2 {
		wg.Go(func() {
			results[i].cert, results[i].key, errs[i] = store.EtcdCA(ctx, cli, "/lan/", "s3cret", fakeCA(arrive))
		})
	}
	wg.Wait()
	if errors.Join(errs...) != nil || !bytes.Equal(results[0].cert, results[1].cert) || !bytes.Equal(results[0].key, results[1].key) {
		t.Fatalf("concurrent creations: %q %q (%v)", results[0].cert, results[1].cert, errs)
	}
	never := fakeCA(func() { t.Error("create called with a CA stored") })
	cert, key, err := store.EtcdCA(ctx, cli, "/lan", "s3cret", never)
	if err != nil || !bytes.Equal(cert, results[0].cert) || !bytes.Equal(key, results[0].key) {
		t.Fatalf("read again: %q (%v)", cert, err)
	}
	resp, err := cli.Get(ctx, "/lan/ca")
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("stored CA: %v", err)
	}
	stored := resp.Kvs[0].Value
	keyBody, _ := pem.Decode(key)
	if bytes.Contains(stored, key) || bytes.Contains(stored, []byte("PRIVATE KEY")) || bytes.Contains(stored, keyBody.Bytes) {
		t.Fatalf("the stored CA shows its key: %s", stored)
	}
	var rec struct{ Cert, SealedKey string }
	if err := json.Unmarshal(stored, &rec); err != nil || rec.Cert != string(cert) || rec.SealedKey == "" {
		t.Fatalf("stored CA %s (%v)", stored, err)
	}
	if _, _, err := store.EtcdCA(ctx, cli, "/lan", "other", never); !errors.Is(err, store.ErrCAToken) {
		t.Fatalf("another token: %v, want ErrCAToken", err)
	}
	if _, _, err := store.EtcdCA(ctx, cli, "/lan", "", never); err == nil {
		t.Fatal("no token: no error")
	}
	if snap, err := store.NewEtcd(cli, "/lan").Load(); err != nil || len(snap.Instances)+len(snap.Machines)+len(snap.Tokens)+len(snap.Revoked) != 0 {
		t.Fatalf("load beside the CA: %+v (%v)", snap, err)
	}
}
