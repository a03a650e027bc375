package natsserver_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/outboxtodo/outboxtodo/shared/natsconn"
	"github.com/outboxtodo/outboxtodo/tools/devstack/natsserver"
)

// connectWith dials url with the options of cfg, as the services do, and proves JetStream
// answers to the authenticated user.
func connectWith(url string, cfg natsconn.Config) error {
	opts, err := cfg.Options()
	if err != nil {
		return err
	}
	nc, err := nats.Connect(url, append(opts, nats.Timeout(3*time.Second))...)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = js.AccountInfo(ctx)
	return err
}

func TestUserPassword(t *testing.T) {
	t.Parallel()
	s := natsserver.StartTest(t, natsserver.Config{Users: []natsserver.User{{Name: "app", Password: "s3cret-pw"}}})
	withUser := strings.Replace(s.ClientURL(), "nats://", "nats://app:s3cret-pw@", 1)
	if err := connectWith(withUser, natsconn.Config{}); err != nil {
		t.Fatalf("with the password: %v", err)
	}
	for _, u := range []string{s.ClientURL(), strings.Replace(s.ClientURL(), "nats://", "nats://app:wrong@", 1)} {
		if err := connectWith(u, natsconn.Config{}); err == nil || !strings.Contains(strings.ToLower(err.Error()), "authorization") {
			t.Fatalf("%s: %v, want an authorization error", u, err)
		}
	}
}

func TestNkeySeedFile(t *testing.T) {
	t.Parallel()
	user := natsserver.NewNkeyUser(t)
	s := natsserver.StartTest(t, natsserver.Config{NkeyUsers: []string{user.Public}})
	cfg := natsconn.Config{NkeySeed: user.SeedFile}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if err := connectWith(s.ClientURL(), cfg); err != nil {
		t.Fatalf("with the seed: %v", err)
	}
	if err := connectWith(s.ClientURL(), natsconn.Config{}); err == nil {
		t.Fatal("connected without the seed")
	}
}

// TestTLS runs a server that requires TLS and a client certificate, both issued by a
// CA of the test's own.
func TestTLS(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	caCert, caKey := issue(t, nil, nil, "test CA", true)
	srvCert, srvKey := issue(t, caCert, caKey, "127.0.0.1", false)
	cliCert, cliKey := issue(t, caCert, caKey, "client", false)
	caFile := writePEM(t, dir, "ca.pem", "CERTIFICATE", caCert.Raw)
	cliFile := writePEM(t, dir, "client.pem", "CERTIFICATE", cliCert.Raw)
	cliKeyFile := writeKey(t, dir, "client.key", cliKey)

	pool := x509.NewCertPool()
	pool.AddCert(caCert)
	s := natsserver.StartTest(t, natsserver.Config{TLS: &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{srvCert.Raw}, PrivateKey: srvKey}},
		ClientCAs:    pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		MinVersion:   tls.VersionTLS12,
	}})
	good := natsconn.Config{TLSCA: caFile, TLSCert: cliFile, TLSKey: cliKeyFile}
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	if err := connectWith(s.ClientURL(), good); err != nil {
		t.Fatalf("with CA and client certificate: %v", err)
	}
	for name, cfg := range map[string]natsconn.Config{
		"no CA (system roots do not know the server)": {TLSCert: cliFile, TLSKey: cliKeyFile},
		"no client certificate":                       {TLSCA: caFile},
	} {
		if err := connectWith(s.ClientURL(), cfg); err == nil {
			t.Errorf("%s: connected", name)
		}
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	f := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(f, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]natsconn.Config{
		"creds and nkey":   {CredsFile: f, NkeySeed: f},
		"cert without key": {TLSCert: f},
		"missing file":     {TLSCA: f + ".missing"},
	} {
		if err := c.Validate(); err == nil {
			t.Errorf("%s: valid", name)
		}
	}
	if err := (natsconn.Config{TLSCA: f, TLSCert: f, TLSKey: f}).Validate(); err != nil {
		t.Errorf("complete TLS settings: %v", err)
	}
}

// issue makes a certificate for name signed by parent (self-signed when nil).
func issue(t *testing.T, parent *x509.Certificate, parentKey *ecdsa.PrivateKey, name string, ca bool) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	if ip := net.ParseIP(name); ip != nil {
		tmpl.IPAddresses = []net.IP{ip}
	}
	if ca {
		tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
		tmpl.KeyUsage |= x509.KeyUsageCertSign
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

func writePEM(t *testing.T, dir, name, typ string, der []byte) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func writeKey(t *testing.T, dir, name string, key *ecdsa.PrivateKey) string {
	t.Helper()
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return writePEM(t, dir, name, "EC PRIVATE KEY", der)
}
