package store

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// ErrCAToken is EtcdCA's error when the token does not open the CA key.
var ErrCAToken = errors.New("the LAN's token differs from the one the CA in etcd was sealed with")

// caInfo is the HKDF info of the CA key's sealing key.
const caInfo = "allex lan ca"

// sealedCA is the value of <prefix>/ca.
type sealedCA struct {
	Cert      string `json:"cert"`
	SealedKey string `json:"sealedkey"` // base64(nonce||ciphertext)
}

// EtcdCA returns the LAN's CA certificate and key kept in etcd at
// <prefix>/ca, creating it with create() when absent (one transaction:
// put only if the key does not exist; a loser of that race reads the
// winner's). The key is sealed with AES-256-GCM under a key derived from
// the LAN's shared token (HKDF-SHA256, info "allex lan ca"), so that a
// reader of etcd (a backup) without the token does not get the CA key.
// A token that does not open it gives ErrCAToken. The etcd Store never
// reads <prefix>/ca.
func EtcdCA(ctx context.Context, cli *clientv3.Client, prefix, token string, create func() (certPEM, keyPEM []byte, err error)) (certPEM, keyPEM []byte, err error) {
	key := strings.TrimSuffix(prefix, "/") + "/ca"
	aead, err := caSealer(token)
	if err != nil {
		return nil, nil, err
	}
	// Read first, so that create (a new key pair) runs only on a LAN without a CA.
	resp, err := cli.Get(ctx, key)
	if err != nil {
		return nil, nil, fmt.Errorf("ca %s: %w", key, err)
	}
	if len(resp.Kvs) > 0 {
		return openCA(aead, key, resp.Kvs[0].Value)
	}
	return putCA(ctx, cli, aead, key, create)
}

// putCA stores create's CA at key unless one got there first, in which
// case it returns that one.
func putCA(ctx context.Context, cli *clientv3.Client, aead cipher.AEAD, key string, create func() ([]byte, []byte, error)) ([]byte, []byte, error) {
	certPEM, keyPEM, err := create()
	if err != nil {
		return nil, nil, fmt.Errorf("ca %s: create: %w", key, err)
	}
	v, err := json.Marshal(sealedCA{Cert: string(certPEM), SealedKey: base64.StdEncoding.EncodeToString(aead.Seal(nil, nil, keyPEM, certPEM))})
	if err != nil {
		return nil, nil, err
	}
	txn, err := cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, string(v))).Else(clientv3.OpGet(key)).Commit()
	if err != nil {
		return nil, nil, fmt.Errorf("ca %s: %w", key, err)
	}
	if txn.Succeeded {
		return certPEM, keyPEM, nil
	}
	return openCA(aead, key, txn.Responses[0].GetResponseRange().Kvs[0].Value)
}

// openCA unseals the stored value v of key.
func openCA(aead cipher.AEAD, key string, v []byte) ([]byte, []byte, error) {
	var s sealedCA
	if err := json.Unmarshal(v, &s); err != nil {
		return nil, nil, fmt.Errorf("ca %s: %w", key, err)
	}
	sealed, err := base64.StdEncoding.DecodeString(s.SealedKey)
	if err != nil {
		return nil, nil, fmt.Errorf("ca %s: sealed key: %w", key, err)
	}
	// The certificate is the additional data: a key is opened only with
	// the certificate it was sealed with.
	keyPEM, err := aead.Open(nil, nil, sealed, []byte(s.Cert))
	if err != nil {
		return nil, nil, fmt.Errorf("ca %s: %w (or its record was altered)", key, ErrCAToken)
	}
	return []byte(s.Cert), keyPEM, nil
}

// caSealer is the AEAD of the CA key: AES-256-GCM with random nonces
// (prepended to the ciphertext) under a key derived from token.
func caSealer(token string) (cipher.AEAD, error) {
	if token == "" {
		return nil, errors.New("ca: no token to seal the CA key with")
	}
	k, err := hkdf.Key(sha256.New, []byte(token), nil, caInfo, 32)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(k)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCMWithRandomNonce(block)
}
