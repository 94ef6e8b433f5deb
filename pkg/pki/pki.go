// Package pki creates the cluster's certificate authority and the API server's serving
// certificate in the data dir on first start, and reuses them afterwards. The CA certificate is
// what kubeconfigs trust; the serving certificate is reissued (by the same CA) when it nears
// expiry or no longer covers every name and address the server is reached by.
package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"
)

const (
	caValidity      = 10 * 365 * 24 * time.Hour
	servingValidity = 365 * 24 * time.Hour
	// renewBefore reissues a serving certificate this long before it expires.
	renewBefore = 30 * 24 * time.Hour
)

// Files are the paths of the PKI inside a data dir.
type Files struct {
	CACert, CAKey, ServingCert, ServingKey string
	// KubeletClientCert and KubeletClientKey are what the API server shows node agents when
	// it fetches a container's log from them (upstream's --kubelet-client-certificate).
	KubeletClientCert, KubeletClientKey string
}

// KubeletClientCommonName is the subject of the API server's client certificate towards node
// agents; agents accept no other.
const KubeletClientCommonName = "svcplane:apiserver-kubelet-client"

// FilesIn returns the PKI paths under dir/pki.
func FilesIn(dir string) Files {
	pkiDir := filepath.Join(dir, "pki")
	return Files{
		CACert:      filepath.Join(pkiDir, "ca.crt"),
		CAKey:       filepath.Join(pkiDir, "ca.key"),
		ServingCert: filepath.Join(pkiDir, "apiserver.crt"),
		ServingKey:  filepath.Join(pkiDir, "apiserver.key"),

		KubeletClientCert: filepath.Join(pkiDir, "apiserver-kubelet-client.crt"),
		KubeletClientKey:  filepath.Join(pkiDir, "apiserver-kubelet-client.key"),
	}
}

// Ensure makes sure a CA and a serving certificate valid for hosts (IP addresses or DNS names)
// exist under f, creating or reissuing what is missing, and returns the CA certificate in PEM.
func Ensure(f Files, hosts []string) ([]byte, error) {
	if err := os.MkdirAll(filepath.Dir(f.CACert), 0o700); err != nil {
		return nil, fmt.Errorf("creating PKI dir: %w", err)
	}
	caCert, caKey, err := loadPair(f.CACert, f.CAKey)
	if errors.Is(err, os.ErrNotExist) {
		caCert, caKey, err = newCA(f)
	}
	if err != nil {
		return nil, fmt.Errorf("loading the cluster CA: %w", err)
	}
	serving, _, err := loadPair(f.ServingCert, f.ServingKey)
	if err != nil || !covers(serving, hosts) || time.Until(serving.NotAfter) < renewBefore || serving.CheckSignatureFrom(caCert) != nil {
		if err := newServing(f, caCert, caKey, hosts); err != nil {
			return nil, fmt.Errorf("issuing the API server's serving certificate: %w", err)
		}
	}
	client, _, err := loadPair(f.KubeletClientCert, f.KubeletClientKey)
	if err != nil || time.Until(client.NotAfter) < renewBefore || client.CheckSignatureFrom(caCert) != nil {
		if err := newKubeletClient(f, caCert, caKey); err != nil {
			return nil, fmt.Errorf("issuing the API server's client certificate for node agents: %w", err)
		}
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caCert.Raw}), nil
}

func covers(cert *x509.Certificate, hosts []string) bool {
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			if !slices.ContainsFunc(cert.IPAddresses, ip.Equal) {
				return false
			}
		} else if !slices.Contains(cert.DNSNames, h) {
			return false
		}
	}
	return true
}

func newCA(f Files) (*x509.Certificate, crypto.Signer, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: fmt.Sprintf("svcplane-ca@%d", now.Unix())},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(caValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, err
	}
	if err := writePair(f.CACert, f.CAKey, der, key); err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	return cert, key, err
}

func newServing(f Files, ca *x509.Certificate, caKey crypto.Signer, hosts []string) error {
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: "svcplane-apiserver"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	return issue(f.ServingCert, f.ServingKey, tmpl, ca, caKey)
}

func newKubeletClient(f Files, ca *x509.Certificate, caKey crypto.Signer) error {
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: KubeletClientCommonName},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	return issue(f.KubeletClientCert, f.KubeletClientKey, tmpl, ca, caKey)
}

// issue signs tmpl (its names and usage) with the CA for a fresh key, valid from an hour ago
// (clock skew) for servingValidity, and writes the pair.
func issue(certPath, keyPath string, tmpl *x509.Certificate, ca *x509.Certificate, caKey crypto.Signer) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	now := time.Now()
	tmpl.SerialNumber = serial()
	tmpl.NotBefore = now.Add(-time.Hour)
	tmpl.NotAfter = now.Add(servingValidity)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, key.Public(), caKey)
	if err != nil {
		return err
	}
	return writePair(certPath, keyPath, der, key)
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return n
}

func writePair(certPath, keyPath string, der []byte, key *ecdsa.PrivateKey) error {
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	// The key is written first and renamed into place last, so a crash never leaves a
	// certificate whose key is missing.
	if err := writeAtomic(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return err
	}
	return writeAtomic(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
}

func writeAtomic(path string, data []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, mode); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func loadPair(certPath, keyPath string) (*x509.Certificate, crypto.Signer, error) {
	certPEM, err := os.ReadFile(certPath)
	if err != nil {
		return nil, nil, err
	}
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, nil, err
	}
	certBlock, _ := pem.Decode(certPEM)
	keyBlock, _ := pem.Decode(keyPEM)
	if certBlock == nil || keyBlock == nil {
		return nil, nil, fmt.Errorf("%s or %s is not PEM", certPath, keyPath)
	}
	cert, err := x509.ParseCertificate(certBlock.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("parsing %s: %w", certPath, err)
	}
	key, err := x509.ParsePKCS8PrivateKey(keyBlock.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("parsing %s: %w", keyPath, err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, nil, fmt.Errorf("%s holds no signing key", keyPath)
	}
	return cert, signer, nil
}
