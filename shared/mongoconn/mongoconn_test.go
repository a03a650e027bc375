package mongoconn_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/outboxtodo/outboxtodo/shared/mongoconn"
)

// down is an address where nothing listens: port 1 is privileged and unused.
const down = "127.0.0.1:1"

func TestConnectWithoutPingIsLazy(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	client, err := mongoconn.Connect(ctx, "mongodb://"+down+"/?directConnection=true",
		mongoconn.Options{AppName: "test", Timeout: 200 * time.Millisecond, OperationTimeout: time.Second})
	if err != nil {
		t.Fatalf("a lazy client failed to start while the server is down: %v", err)
	}
	start := time.Now()
	if err := client.Ping(ctx, nil); err == nil {
		t.Fatal("ping of a server that is down succeeded")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("the ping took %s: the timeouts were not applied", d)
	}
	if err := mongoconn.Disconnect(ctx, client); err != nil {
		t.Fatal(err)
	}
}

func TestConnectWithPingFailsWithinTimeout(t *testing.T) {
	t.Parallel()
	start := time.Now()
	_, err := mongoconn.Connect(context.Background(), "mongodb://"+down+"/?directConnection=true",
		mongoconn.Options{AppName: "test", Timeout: 200 * time.Millisecond, Ping: true})
	if err == nil || !strings.Contains(err.Error(), "ping mongodb") {
		t.Fatalf("err = %v, want a failed ping", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("the failed ping took %s, beyond its timeout", d)
	}
}

func TestConnectRejectsABadURI(t *testing.T) {
	t.Parallel()
	if _, err := mongoconn.Connect(context.Background(), "postgres://db", mongoconn.Options{Timeout: time.Second}); err == nil {
		t.Fatal("accepted a URI of another scheme")
	}
}
