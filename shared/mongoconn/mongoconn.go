// Package mongoconn opens and closes the one pooled MongoDB client of a process, with
// the timeouts and the checks every service that reads or writes the read model needs.
package mongoconn

import (
	"context"
	"fmt"
	"time"

	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.mongodb.org/mongo-driver/v2/mongo/writeconcern"
)

// Options are a client's settings besides its URI.
type Options struct {
	// AppName names the client in the server's logs and currentOp.
	AppName string
	// Timeout bounds choosing a server and dialling it, and the ping when Ping is set.
	Timeout time.Duration
	// OperationTimeout, when positive, bounds every operation whose context has no
	// deadline of its own (the driver's client-side operation timeout).
	OperationTimeout time.Duration
	// WriteConcern overrides the URI's w and journal; nil keeps them.
	WriteConcern *writeconcern.WriteConcern
	// Ping checks at connect that a server answers within Timeout, so that a process
	// that cannot work without MongoDB fails at start. Without it the client connects
	// lazily and in the background: a reader that must start while MongoDB is down
	// leaves it unset and reports the outage through its health checks.
	Ping bool
}

// Connect returns a client of the deployment at uri. It fails only on a bad URI or
// options, or when Ping is set and no server answers.
func Connect(ctx context.Context, uri string, o Options) (*mongo.Client, error) {
	co := options.Client().ApplyURI(uri).SetAppName(o.AppName).
		SetServerSelectionTimeout(o.Timeout).SetConnectTimeout(o.Timeout)
	if o.OperationTimeout > 0 {
		co.SetTimeout(o.OperationTimeout)
	}
	if o.WriteConcern != nil {
		co.SetWriteConcern(o.WriteConcern)
	}
	client, err := mongo.Connect(co)
	if err != nil {
		return nil, fmt.Errorf("mongodb client: %w", err)
	}
	if !o.Ping {
		return client, nil
	}
	pctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	if err := client.Ping(pctx, nil); err != nil {
		_ = Disconnect(ctx, client)
		return nil, fmt.Errorf("ping mongodb: %w", err)
	}
	return client, nil
}

// disconnectTimeout bounds closing a client's connections: a server that does not
// answer must not hold up the end of the process.
const disconnectTimeout = 5 * time.Second

// Disconnect closes client's connections within a few seconds, even after ctx ended.
func Disconnect(ctx context.Context, client *mongo.Client) error {
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), disconnectTimeout)
	defer cancel()
	if err := client.Disconnect(dctx); err != nil {
		return fmt.Errorf("disconnect mongodb: %w", err)
	}
	return nil
}
