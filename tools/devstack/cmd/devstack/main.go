// Command devstack runs the whole system on one machine (`make run`): it starts what is
// missing (an embedded NATS JetStream server and an embedded FerretDB, with their data
// under DATA_DIR), creates and migrates the PostgreSQL database, then runs the api,
// publisher and projector binaries from BIN_DIR, prints where they listen, and stops
// everything on Ctrl-C (SIGINT) or SIGTERM.
//
// External servers replace the embedded ones: set NATS_URL and/or MONGODB_URI.
// DATABASE_URL names the PostgreSQL database (created when missing). The embedded
// FerretDB stores its data in the sibling database <name>_ferretdb, with
// synchronous_commit off (fast, and fine for data a rebuild recreates), and the
// projector gets FERRETDB_POSTGRESQL_URL so that it indexes it (see
// shared/readmodel/ferretindex).
//
// Every child gets this process's environment, so a setting such as LOG_LEVEL reaches
// all three. ADMIN_ADDR would put them on one port, so each service's admin listener
// has its own variable instead: API_ADMIN_ADDR (default :9090), PUBLISHER_ADMIN_ADDR
// (:9091) and PROJECTOR_ADMIN_ADDR (:9092). With API_ADDR and FERRETDB_ADDR and
// DEVSTACK_NATS_PORT they let a second stack (a test's) run beside a developer's.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/outboxtodo/outboxtodo/migrations"
	"github.com/outboxtodo/outboxtodo/shared/postgres"
	"github.com/outboxtodo/outboxtodo/shared/process"
	"github.com/outboxtodo/outboxtodo/tools/devstack/child"
	"github.com/outboxtodo/outboxtodo/tools/devstack/ferret"
	"github.com/outboxtodo/outboxtodo/tools/devstack/natsserver"
	"github.com/outboxtodo/outboxtodo/tools/devstack/pgadmin"
)

func main() { process.Main("devstack", run) }

type config struct {
	dataDir     string
	binDir      string
	databaseURL string
	natsURL     string // empty: embedded
	natsPort    int
	mongoURI    string // empty: embedded
	ferretAddr  string
	apiAddr     string
	// adminAddrs maps each service to its admin listener (probes, /metrics).
	adminAddrs map[string]string
}

func loadConfig() config {
	return config{
		dataDir:     envOr("DATA_DIR", ".data"),
		binDir:      envOr("BIN_DIR", "bin"),
		databaseURL: envOr("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/todo?sslmode=disable"),
		natsURL:     os.Getenv("NATS_URL"),
		// Not 4222 by default: a system NATS server may already hold it.
		natsPort:   envInt("DEVSTACK_NATS_PORT", 14222),
		mongoURI:   os.Getenv("MONGODB_URI"),
		ferretAddr: envOr("FERRETDB_ADDR", "127.0.0.1:27017"),
		apiAddr:    envOr("API_ADDR", ":8080"),
		adminAddrs: map[string]string{
			"api":       envOr("API_ADMIN_ADDR", ":9090"),
			"publisher": envOr("PUBLISHER_ADMIN_ADDR", ":9091"),
			"projector": envOr("PROJECTOR_ADMIN_ADDR", ":9092"),
		},
	}
}

func run(ctx context.Context, log *slog.Logger) error {
	cfg := loadConfig()
	start := time.Now()
	if err := os.MkdirAll(cfg.dataDir, 0o755); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	if err := migrate(ctx, log, cfg.databaseURL); err != nil {
		return err
	}
	natsURL, stopNATS, err := startNATS(log, cfg)
	if err != nil {
		return err
	}
	defer stopNATS()
	mongoURI, ferretPostgreSQLURL, stopFerret, err := startFerret(ctx, log, cfg)
	if err != nil {
		return err
	}
	defer stopFerret()

	env := append(os.Environ(),
		"DATABASE_URL="+cfg.databaseURL, "NATS_URL="+natsURL, "MONGODB_URI="+mongoURI, "API_ADDR="+cfg.apiAddr)
	if ferretPostgreSQLURL != "" {
		env = append(env, "FERRETDB_POSTGRESQL_URL="+ferretPostgreSQLURL)
	}
	return superviseServices(ctx, log, cfg, env, func(ctx context.Context) {
		apiURL := "http://localhost:" + port(cfg.apiAddr)
		if err := child.WaitHealthy(ctx, apiURL+"/health/databases"); err != nil {
			log.Warn("api not healthy yet", "error", err)
			return
		}
		fmt.Fprintf(os.Stderr, "\nready in %s\n  API        %s   (OpenAPI: %s/openapi.json)\n  health     %s/health/sync\n  metrics    api :%s, publisher :%s, projector :%s (/metrics)\n  NATS       %s\n  MongoDB    %s\nCtrl-C stops everything.\n\n",
			time.Since(start).Round(time.Millisecond), apiURL, apiURL, apiURL,
			port(cfg.adminAddrs["api"]), port(cfg.adminAddrs["publisher"]), port(cfg.adminAddrs["projector"]), natsURL, mongoURI)
	})
}

// migrate creates the PostgreSQL database when it is missing and applies the schema.
func migrate(ctx context.Context, log *slog.Logger, databaseURL string) error {
	if err := pgadmin.EnsureDatabase(ctx, databaseURL); err != nil {
		return err
	}
	applied, err := migrations.Up(ctx, databaseURL)
	if err != nil {
		return err
	}
	log.Info("schema migrated", "database", postgres.Redact(databaseURL), "applied", len(applied))
	return nil
}

// startNATS starts the embedded NATS JetStream server unless cfg names one, and
// returns the URL the services use and how to stop what it started.
func startNATS(log *slog.Logger, cfg config) (clientURL string, stop func(), _ error) {
	if cfg.natsURL != "" {
		return cfg.natsURL, func() {}, nil
	}
	srv, err := natsserver.Start(natsserver.Config{
		StoreDir: filepath.Join(cfg.dataDir, "nats"), Port: cfg.natsPort, Name: "devstack", Log: slog.New(component("nats", slog.LevelWarn)),
	})
	if err != nil {
		return "", nil, fmt.Errorf("start embedded NATS: %w", err)
	}
	log.Info("embedded NATS JetStream started", "url", srv.ClientURL())
	return srv.ClientURL(), srv.Shutdown, nil
}

// startFerret starts the embedded FerretDB on the sibling database <name>_ferretdb
// unless cfg names a MongoDB server, and returns the URI the services use, the
// PostgreSQL database the projector indexes (empty with an external server) and how to
// stop what it started.
func startFerret(ctx context.Context, log *slog.Logger, cfg config) (uri, postgreSQLURL string, stop func(), _ error) {
	if cfg.mongoURI != "" {
		return cfg.mongoURI, "", func() {}, nil
	}
	ferretURL, err := siblingDatabase(cfg.databaseURL, "_ferretdb")
	if err != nil {
		return "", "", nil, err
	}
	if err := pgadmin.EnsureDatabase(ctx, ferretURL); err != nil {
		return "", "", nil, err
	}
	// Not ctx: FerretDB must outlive the services while they drain. Commits without
	// waiting for the disk: a development stack's read model can be rebuilt.
	srv, err := ferret.Start(context.WithoutCancel(ctx), ferret.Config{Addr: cfg.ferretAddr, PostgreSQLURL: ferretURL,
		Logger: slog.New(ferret.LogHandler(component("ferretdb", slog.LevelError))), SynchronousCommitOff: true})
	if err != nil {
		return "", "", nil, fmt.Errorf("start embedded FerretDB: %w", err)
	}
	log.Info("embedded FerretDB started", "uri", srv.URI())
	stop = func() {
		if err := srv.Stop(); err != nil {
			log.Warn("stop FerretDB", "error", err)
		}
	}
	// The projector creates the GIN indexes FerretDB's lookups need in it.
	return srv.URI(), ferretURL, stop, nil
}

// superviseServices runs the publisher, projector and api binaries with env, calls
// started once all three started, and runs until ctx ends or one of them exits; then
// it stops all of them. started's context ends with the services.
func superviseServices(ctx context.Context, log *slog.Logger, cfg config, env []string, started func(ctx context.Context)) error {
	svcCtx, stop := context.WithCancel(ctx)
	defer stop()
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for _, name := range []string{"publisher", "projector", "api"} {
		// The last ADMIN_ADDR wins in exec's environment, so this overrides an inherited one.
		cmd := child.Command(svcCtx, filepath.Join(cfg.binDir, name), append(env[:len(env):len(env)], "ADMIN_ADDR="+cfg.adminAddrs[name]), os.Stdout, os.Stderr)
		if err := cmd.Start(); err != nil {
			stop()
			wg.Wait()
			return fmt.Errorf("start %s: %w (run `make build` first)", name, err)
		}
		log.Info("service started", "service", name, "pid", cmd.Process.Pid)
		wg.Go(func() {
			err := cmd.Wait()
			if svcCtx.Err() == nil {
				// An exit we did not ask for takes the whole stack down.
				mu.Lock()
				errs = append(errs, fmt.Errorf("%s exited: %v", name, err))
				mu.Unlock()
				stop()
			}
		})
	}
	started(svcCtx)
	<-svcCtx.Done()
	log.Info("stopping services")
	wg.Wait()
	return errors.Join(errs...)
}

// component is the log handler of an embedded server, from level on.
func component(name string, level slog.Level) slog.Handler {
	return slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level}).
		WithAttrs([]slog.Attr{slog.String("service", "devstack"), slog.String("component", name)})
}

// siblingDatabase is databaseURL with suffix appended to the database name.
func siblingDatabase(databaseURL, suffix string) (string, error) {
	u, err := url.Parse(databaseURL)
	if err != nil {
		return "", fmt.Errorf("parse %s: %w", postgres.Redact(databaseURL), err)
	}
	u.Path = "/" + strings.Trim(u.Path, "/") + suffix
	return u.String(), nil
}

func port(addr string) string {
	if i := strings.LastIndex(addr, ":"); i >= 0 {
		return addr[i+1:]
	}
	return addr
}

func envInt(key string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(key)); err == nil {
		return v
	}
	return def
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
