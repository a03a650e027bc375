package app

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/outboxtodo/outboxtodo/services/api/internal/httpapi"
	"github.com/outboxtodo/outboxtodo/services/api/internal/readside"
	"github.com/outboxtodo/outboxtodo/services/api/internal/syncstatus"
	"github.com/outboxtodo/outboxtodo/shared/mongoconn"
	"github.com/outboxtodo/outboxtodo/shared/natsconn"
	"github.com/outboxtodo/outboxtodo/shared/outbox"
)

// readSide is the API's read-only view of MongoDB and JetStream. Neither has to be up
// for the API to start or to take writes: both clients connect lazily and reconnect on
// their own, and /health/databases says when they are down.
type readSide struct {
	readModel *readside.Store
	reporter  *syncstatus.Reporter
	checks    []httpapi.Check
}

// openReadSide connects the read side, registering each release on a.closer. Nothing
// of the API's is lost with a read side that does not close cleanly: a failed release
// is logged, not returned.
func (a *App) openReadSide(ctx context.Context) (*readSide, error) {
	cfg, log := a.cfg, a.log
	client, err := mongoconn.Connect(ctx, cfg.MongoURI,
		mongoconn.Options{AppName: "api", Timeout: cfg.MongoTimeout, OperationTimeout: cfg.MongoTimeout})
	if err != nil {
		return nil, err
	}
	a.closer.Add(func(ctx context.Context) error {
		if err := mongoconn.Disconnect(ctx, client); err != nil {
			log.Warn("close read side", "error", err)
		}
		return nil
	})
	nc, err := natsconn.Connect(cfg.NATSURL, cfg.NATS, "api", log, nats.RetryOnFailedConnect(true))
	if err != nil {
		return nil, err
	}
	a.closer.Add(func(context.Context) error { nc.Close(); return nil })
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	rm := readside.New(client, cfg.MongoDatabase)
	return &readSide{
		readModel: rm,
		reporter: &syncstatus.Reporter{
			Outbox:    func(ctx context.Context) (outbox.Stats, error) { return outbox.ReadStats(ctx, a.syncPool) },
			JetStream: js,
			Stream:    cfg.Stream,
			Consumer:  cfg.Consumer,
			Members:   cfg.MembersBucket,
			ReadModel: rm,
			Thresholds: syncstatus.Thresholds{
				OutboxAgeWarn: cfg.SyncOutboxAgeWarn, OutboxAgeCrit: cfg.SyncOutboxAgeCrit,
				BacklogWarn: cfg.SyncBacklogWarn, BacklogCrit: cfg.SyncBacklogCrit,
				LagWarn: cfg.SyncLagWarn, LagCrit: cfg.SyncLagCrit,
				PendingWarn: cfg.SyncPendingWarn, PendingCrit: cfg.SyncPendingCrit,
			},
			Timeout: syncTimeout,
			Now:     time.Now,
		},
		checks: []httpapi.Check{
			{Name: "mongodb", Timeout: 2 * time.Second, Fn: func(ctx context.Context) error { return client.Ping(ctx, nil) }},
			{Name: "nats", Timeout: 2 * time.Second, Fn: func(ctx context.Context) error {
				if s := nc.Status(); s != nats.CONNECTED {
					return fmt.Errorf("nats connection is %s", s)
				}
				// The account info round trip proves JetStream answers, not just the server.
				_, err := js.AccountInfo(ctx)
				return err
			}},
		},
	}, nil
}
