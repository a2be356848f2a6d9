package lanpki

import (
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
)

const (
	pemCert = "CERTIFICATE"
	pemKey  = "PRIVATE KEY"
	pemCSR  = "CERTIFICATE REQUEST"
)

func encodePEM(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

// firstBlock returns the first PEM block of one of types, skipping the
// others a bundle may hold before it.
func firstBlock(b []byte, types ...string) (*pem.Block, error) {
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			return nil, fmt.Errorf("no %s PEM block", types[0])
		}
		for _, t := range types {
			if block.Type == t {
				return block, nil
			}
		}
	}
}

// ParseCertPEM parses the first CERTIFICATE block of b.
func ParseCertPEM(b []byte) (*x509.Certificate, error) {
	block, err := firstBlock(b, pemCert)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(block.Bytes)
}

// LoadKeyPair is tls.X509KeyPair with Leaf set.
func LoadKeyPair(certPEM, keyPEM []byte) (tls.Certificate, error) {
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return tls.Certificate{}, err
	}
	if cert.Leaf == nil {
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return tls.Certificate{}, err
		}
	}
	return cert, nil
}

// parseKeyPEM parses a PKCS#8, SEC 1 or PKCS#1 key: what openssl writes
// by default, for an operator who made the CA with it.
func parseKeyPEM(b []byte) (crypto.Signer, error) {
	block, err := firstBlock(b, pemKey, "EC PRIVATE KEY", "RSA PRIVATE KEY", "ENCRYPTED PRIVATE KEY")
	if err != nil {
		return nil, err
	}
	var key any
	switch block.Type {
	case pemKey:
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	default:
		return nil, errors.New("the key is encrypted: give it decrypted")
	}
	if err != nil {
		return nil, err
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("a %T cannot sign", key)
	}
	return signer, nil
}
