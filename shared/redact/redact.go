// Package redact masks credentials in connection strings before they reach logs and
// error messages.
package redact

import (
	"net/url"
	"strings"
)

// secretParams are query parameters that carry secrets in connection strings: libpq's
// password and sslpassword (the client key's passphrase) and the MongoDB driver's
// tlsCertificateKeyFilePassword.
var secretParams = map[string]bool{"password": true, "sslpassword": true, "tlscertificatekeyfilepassword": true}

// URL masks the password of a URL (PostgreSQL, MongoDB, NATS...) and the query
// parameters that hold secrets. A URL that does not parse is replaced whole, since it
// may hold a secret in a place we cannot find.
func URL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable url)"
	}
	if u.RawQuery != "" {
		q := u.Query()
		masked := false
		for k := range q {
			if secretParams[strings.ToLower(k)] {
				q[k] = []string{"xxxxx"}
				masked = true
			}
		}
		if masked {
			u.RawQuery = q.Encode()
		}
	}
	return u.Redacted()
}

// NATSURLs masks a comma-separated list of NATS server URLs. Besides passwords it masks
// a user without a password, which NATS treats as an authentication token.
func NATSURLs(raw string) string {
	parts := strings.Split(raw, ",")
	for i, p := range parts {
		u, err := url.Parse(strings.TrimSpace(p))
		if err != nil {
			parts[i] = "(unparsable url)"
			continue
		}
		if u.User != nil {
			if _, has := u.User.Password(); has {
				u.User = url.UserPassword(u.User.Username(), "xxxxx")
			} else {
				u.User = url.User("xxxxx")
			}
		}
		parts[i] = u.String()
	}
	return strings.Join(parts, ",")
}
