package devstack

import (
	"testing"

	"github.com/outboxtodo/outboxtodo/shared/sharedtest"
)

// TestEnv is the environment of a stack of the test's own (`make run`, bin/devstack),
// beside a developer's and other tests': its data in a directory of the test's, its
// PostgreSQL database dbURL, and each of its listeners on a free port of 127.0.0.1.
// listeners maps each listener ("api", "api admin", "publisher admin", "projector
// admin", "nats", "ferretdb") to its address.
func TestEnv(t testing.TB, dbURL string) (env, listeners map[string]string) {
	t.Helper()
	ports := sharedtest.FreePorts(t, 6)
	listeners = map[string]string{}
	for i, name := range []string{"api", "api admin", "publisher admin", "projector admin", "nats", "ferretdb"} {
		listeners[name] = "127.0.0.1:" + ports[i]
	}
	env = map[string]string{
		"DATA_DIR":             t.TempDir(),
		"DATABASE_URL":         dbURL,
		"API_ADDR":             listeners["api"],
		"API_ADMIN_ADDR":       listeners["api admin"],
		"PUBLISHER_ADMIN_ADDR": listeners["publisher admin"],
		"PROJECTOR_ADMIN_ADDR": listeners["projector admin"],
		// The embedded NATS server listens on 127.0.0.1 and takes a port only.
		"DEVSTACK_NATS_PORT": ports[4],
		"FERRETDB_ADDR":      listeners["ferretdb"],
	}
	return env, listeners
}
