// Package config is the API's configuration, read from environment variables with
// defaults and validated before anything starts. Each field's tag names its variable
// and default; the comments say what the value means.
//
// Database TLS is configured in DATABASE_URL itself, with libpq's parameters, which
// pgx reads: sslmode=verify-full checks the server's certificate and host name
// against sslrootcert=/path/ca.pem; sslcert and sslkey give a client certificate.
// sslmode=require encrypts without checking who answers, and disable (the local
// default) sends everything, password included, in clear: use verify-full in
// production. The password, too, belongs in DATABASE_URL (or in PGPASSWORD or a
// passfile, which pgx also reads); it is masked wherever the URL is logged.
//
// Config logs itself (LogValue) through envconfig: every variable by its name, secrets
// masked by their secret tag.
package config

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/outboxtodo/outboxtodo/services/api/internal/clientaddr"
	"github.com/outboxtodo/outboxtodo/services/api/internal/todos"
	"github.com/outboxtodo/outboxtodo/shared/envconfig"
	"github.com/outboxtodo/outboxtodo/shared/natsconn"
	sharedpg "github.com/outboxtodo/outboxtodo/shared/postgres"
	"github.com/outboxtodo/outboxtodo/shared/redact"
)

// Config of the API process.
type Config struct {
	APIAddr     string `env:"API_ADDR" envDefault:":8080"`
	AdminAddr   string `env:"ADMIN_ADDR" envDefault:":9090"`
	DatabaseURL string `env:"DATABASE_URL" envDefault:"postgres://postgres@127.0.0.1:5432/todo?sslmode=disable" secret:"url"`
	DBMaxConns  int32  `env:"DB_MAX_CONNS" envDefault:"16"`
	// RequestTimeout bounds the work of one request, database calls included.
	RequestTimeout time.Duration `env:"REQUEST_TIMEOUT" envDefault:"10s"`
	// ShutdownTimeout is how long in-flight requests may finish after SIGTERM; keep it
	// below the pod's termination grace period (30s by default).
	ShutdownTimeout    time.Duration `env:"SHUTDOWN_TIMEOUT" envDefault:"20s"`
	MaxBodyBytes       int64         `env:"MAX_BODY_BYTES" envDefault:"65536"`
	CORSAllowedOrigins []string      `env:"CORS_ALLOWED_ORIGINS" envSeparator:","`
	// IdempotencySweepInterval is how often expired idempotency keys are deleted.
	IdempotencySweepInterval time.Duration `env:"IDEMPOTENCY_SWEEP_INTERVAL" envDefault:"5m"`
	// LeaderboardCacheTTL is how long one read of the ranking serves every
	// leaderboard request of a replica (0 reads per request): on the FerretDB
	// stand-in the query sorts every user's stats in memory.
	LeaderboardCacheTTL time.Duration `env:"LEADERBOARD_CACHE_TTL" envDefault:"1s"`
	// TokenTTL is the lifetime of new tokens (sign-up and issued); a request may ask
	// for an earlier expiry, never a later one. 0: tokens do not expire unless asked.
	TokenTTL time.Duration `env:"TOKEN_TTL" envDefault:"0s"`
	// AuthCacheTTL is how long a replica trusts a token it looked up without asking
	// the database again: the bound on how late a revocation made through another
	// replica takes effect (0: every request looks its token up). AuthCacheSize bounds
	// the tokens a replica caches (about 300 bytes each).
	AuthCacheTTL  time.Duration `env:"AUTH_CACHE_TTL" envDefault:"1s"`
	AuthCacheSize int           `env:"AUTH_CACHE_SIZE" envDefault:"100000"`
	// MaxTodosPerUser bounds the todos one user may hold (409 too-many-todos past
	// it), so that deleting a user stays one bounded transaction.
	MaxTodosPerUser int64 `env:"MAX_TODOS_PER_USER" envDefault:"10000"`
	// OutboxNotify wakes the publisher at commit with pg_notify: auto (probe the
	// database at start: PostgreSQL yes, CockroachDB no), on or off.
	OutboxNotify string `env:"OUTBOX_NOTIFY" envDefault:"auto"`

	// Sign-in. Passwords are hashed with argon2id at these parameters (memory in KiB,
	// passes, lanes; OWASP's m=19 MiB, t=2, p=1 by default), which each hash records,
	// so raising them re-hashes a user's password at their next sign-in. At most
	// PasswordHashConcurrency hashes run at once (each holds the memory); the others
	// wait, so a flood of sign-ins cannot starve the rest of the API.
	PasswordHashMemory      uint32 `env:"PASSWORD_HASH_MEMORY" envDefault:"19456"`
	PasswordHashTime        uint32 `env:"PASSWORD_HASH_TIME" envDefault:"2"`
	PasswordHashThreads     uint8  `env:"PASSWORD_HASH_THREADS" envDefault:"1"`
	PasswordHashConcurrency int    `env:"PASSWORD_HASH_CONCURRENCY" envDefault:"2"`
	// Sign-in attempts allowed per email address and per client address within
	// SignInWindow (a token bucket: that many at once, refilled over the window).
	SignInPerEmail   int           `env:"SIGN_IN_ATTEMPTS_PER_EMAIL" envDefault:"10"`
	SignInPerAddress int           `env:"SIGN_IN_ATTEMPTS_PER_ADDRESS" envDefault:"30"`
	SignInWindow     time.Duration `env:"SIGN_IN_WINDOW" envDefault:"15m"`

	// ReadYourWritesWait bounds how long a read of the read model that carries a
	// Consistency-Token waits for the read model to include that write.
	ReadYourWritesWait time.Duration `env:"READ_YOUR_WRITES_WAIT" envDefault:"2s"`
	// PublicURL is the API's base URL as clients reach it, named as the server of the
	// OpenAPI document served at /openapi.json; empty: the document's own
	// (http://localhost:8080).
	PublicURL string `env:"PUBLIC_URL"`

	// CursorSecret keys the MAC that makes pagination cursors tamper-proof: at least
	// 32 bytes, the same on every replica (generate one with openssl rand -base64 48).
	// Unset, each process draws a random key at start, so a cursor fails with
	// invalid-cursor after a restart or on another replica; a warning says so.
	CursorSecret string `env:"CURSOR_SECRET" secret:"true"`

	// Rate limits, as token buckets: a sustained rate in requests per second and a
	// burst. A rate of 0 disables the limit. Per IP applies to every route and keys
	// on the client address (an IPv6 client by its /64); per token applies to the
	// authenticated routes. Load generators running from one machine need them
	// raised or disabled.
	RateLimitPerIP         float64 `env:"RATE_LIMIT_PER_IP" envDefault:"100"`
	RateLimitPerIPBurst    int     `env:"RATE_LIMIT_PER_IP_BURST" envDefault:"200"`
	RateLimitPerToken      float64 `env:"RATE_LIMIT_PER_TOKEN" envDefault:"50"`
	RateLimitPerTokenBurst int     `env:"RATE_LIMIT_PER_TOKEN_BURST" envDefault:"100"`
	// RateLimitKeys bounds the buckets each limit keeps in memory (about 200 bytes
	// each); past it the least recently used bucket is dropped.
	RateLimitKeys int `env:"RATE_LIMIT_KEYS" envDefault:"100000"`
	// TrustedProxies lists the CIDR prefixes (or addresses) of the reverse proxies
	// whose X-Forwarded-For is believed for the client address. Empty: the peer
	// address is the client, whatever the header says.
	TrustedProxies []string `env:"TRUSTED_PROXIES" envSeparator:","`
	// TrustedProxyPrefixes is TrustedProxies parsed.
	TrustedProxyPrefixes []netip.Prefix `env:"-"`

	// The read side: the MongoDB read model the projector writes (leaderboard, stats,
	// /health/sync) and the stream and consumer /health/sync reports on. The API only
	// reads both; writes never depend on them.
	MongoURI      string        `env:"MONGODB_URI" envDefault:"mongodb://127.0.0.1:27017/?directConnection=true" secret:"url"`
	MongoDatabase string        `env:"MONGODB_DATABASE" envDefault:"todo_read"`
	MongoTimeout  time.Duration `env:"MONGODB_TIMEOUT" envDefault:"5s"`
	NATSURL       string        `env:"NATS_URL" envDefault:"nats://127.0.0.1:4222" secret:"natsurls"`
	// NATS holds the credential files and TLS settings (NATS_CREDS, NATS_NKEY_SEED,
	// NATS_TLS_*); a user and password go in NATS_URL.
	NATS     natsconn.Config
	Stream   string `env:"STREAM_NAME" envDefault:"TODO_EVENTS"`
	Consumer string `env:"CONSUMER_NAME" envDefault:"projector"`
	// MembersBucket is the projector's KV bucket of replicas and partition claims, read
	// by /health/sync to name each partition's holder.
	MembersBucket string `env:"MEMBERS_BUCKET" envDefault:"projector-members"`

	// Alert thresholds of /health/sync (0 disables one): a warning answers 200, a
	// critical alert 503.
	SyncOutboxAgeWarn time.Duration `env:"SYNC_OUTBOX_AGE_WARN" envDefault:"30s"`
	SyncOutboxAgeCrit time.Duration `env:"SYNC_OUTBOX_AGE_CRIT" envDefault:"5m"`
	SyncBacklogWarn   int64         `env:"SYNC_BACKLOG_WARN" envDefault:"10000"`
	SyncBacklogCrit   int64         `env:"SYNC_BACKLOG_CRIT" envDefault:"1000000"`
	SyncLagWarn       time.Duration `env:"SYNC_LAG_WARN" envDefault:"30s"`
	SyncLagCrit       time.Duration `env:"SYNC_LAG_CRIT" envDefault:"5m"`
	SyncPendingWarn   int64         `env:"SYNC_PENDING_WARN" envDefault:"10000"`
	SyncPendingCrit   int64         `env:"SYNC_PENDING_CRIT" envDefault:"1000000"`

	// Limits against slow and oversized requests. ReadHeaderTimeout cuts off a
	// client that dribbles its headers (slowloris); REQUEST_TIMEOUT also bounds
	// reading the whole request. MaxHeaderBytes bounds the request line and headers.
	ReadHeaderTimeout time.Duration `env:"READ_HEADER_TIMEOUT" envDefault:"5s"`
	IdleTimeout       time.Duration `env:"IDLE_TIMEOUT" envDefault:"2m"`
	MaxHeaderBytes    int           `env:"MAX_HEADER_BYTES" envDefault:"16384"`
}

// Load reads the configuration from the environment and validates it.
func Load() (Config, error) {
	return FromMap(nil)
}

// FromMap reads the configuration from environ (the process environment when nil) and
// validates it.
func FromMap(environ map[string]string) (Config, error) {
	c, err := envconfig.Parse[Config](environ)
	if err != nil {
		return Config{}, err
	}
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	c.TrustedProxyPrefixes, _ = clientaddr.ParsePrefixes(c.TrustedProxies) // validated
	return c, nil
}

// Validate reports every invalid setting at once.
func (c Config) Validate() error {
	return errors.Join(slices.Concat(c.validateServer(), c.validateLimits(), c.validateSignIn(), c.validateReadSide())...)
}

// validateServer checks the listeners, the database and the HTTP server's bounds.
func (c Config) validateServer() []error {
	var errs []error
	for _, a := range [][2]string{{"API_ADDR", c.APIAddr}, {"ADMIN_ADDR", c.AdminAddr}} {
		if _, _, err := net.SplitHostPort(a[1]); err != nil {
			errs = append(errs, fmt.Errorf("%s %q: want host:port", a[0], a[1]))
		}
	}
	if c.APIAddr == c.AdminAddr {
		errs = append(errs, errors.New("API_ADDR and ADMIN_ADDR must differ"))
	}
	if !strings.HasPrefix(c.DatabaseURL, "postgres://") && !strings.HasPrefix(c.DatabaseURL, "postgresql://") {
		errs = append(errs, fmt.Errorf("DATABASE_URL %s: want a postgres:// URL", sharedpg.Redact(c.DatabaseURL)))
	}
	if c.DBMaxConns < 1 || c.DBMaxConns > 1000 {
		errs = append(errs, fmt.Errorf("DB_MAX_CONNS %d: want 1..1000", c.DBMaxConns))
	}
	if c.RequestTimeout < 100*time.Millisecond || c.RequestTimeout > 5*time.Minute {
		errs = append(errs, fmt.Errorf("REQUEST_TIMEOUT %s: want 100ms..5m", c.RequestTimeout))
	}
	if c.ShutdownTimeout < time.Second || c.ShutdownTimeout > 5*time.Minute {
		errs = append(errs, fmt.Errorf("SHUTDOWN_TIMEOUT %s: want 1s..5m", c.ShutdownTimeout))
	}
	if c.ReadHeaderTimeout < 100*time.Millisecond || c.ReadHeaderTimeout > time.Minute {
		errs = append(errs, fmt.Errorf("READ_HEADER_TIMEOUT %s: want 100ms..1m", c.ReadHeaderTimeout))
	}
	if c.IdleTimeout < time.Second || c.IdleTimeout > time.Hour {
		errs = append(errs, fmt.Errorf("IDLE_TIMEOUT %s: want 1s..1h", c.IdleTimeout))
	}
	if c.MaxHeaderBytes < 1024 || c.MaxHeaderBytes > 1<<20 {
		errs = append(errs, fmt.Errorf("MAX_HEADER_BYTES %d: want 1024..1048576", c.MaxHeaderBytes))
	}
	for _, o := range c.CORSAllowedOrigins {
		if o != "*" && !strings.HasPrefix(o, "http://") && !strings.HasPrefix(o, "https://") {
			errs = append(errs, fmt.Errorf("CORS_ALLOWED_ORIGINS entry %q: want * or an http(s):// origin", o))
		}
	}
	if c.PublicURL != "" && !strings.HasPrefix(c.PublicURL, "http://") && !strings.HasPrefix(c.PublicURL, "https://") {
		errs = append(errs, fmt.Errorf("PUBLIC_URL %q: want an http(s):// URL", c.PublicURL))
	}
	if c.IdempotencySweepInterval < time.Second {
		errs = append(errs, fmt.Errorf("IDEMPOTENCY_SWEEP_INTERVAL %s: want at least 1s", c.IdempotencySweepInterval))
	}
	switch c.OutboxNotify {
	case "auto", "on", "off":
	default:
		errs = append(errs, fmt.Errorf("OUTBOX_NOTIFY %q: want auto, on or off", c.OutboxNotify))
	}
	return errs
}

// validateLimits checks the bounds on what one client may ask: request sizes and
// rates, todos per user, and the proxies believed for the client address.
func (c Config) validateLimits() []error {
	var errs []error
	if c.MaxTodosPerUser < 1 || c.MaxTodosPerUser > 1000000 {
		errs = append(errs, fmt.Errorf("MAX_TODOS_PER_USER %d: want 1 to 1000000", c.MaxTodosPerUser))
	}
	for _, rl := range []struct {
		name  string
		rate  float64
		burst int
	}{{"RATE_LIMIT_PER_IP", c.RateLimitPerIP, c.RateLimitPerIPBurst}, {"RATE_LIMIT_PER_TOKEN", c.RateLimitPerToken, c.RateLimitPerTokenBurst}} {
		if !(rl.rate >= 0) || rl.rate > 1e6 {
			errs = append(errs, fmt.Errorf("%s %v: want 0 (off) to 1000000 requests per second", rl.name, rl.rate))
		}
		if rl.rate > 0 && (rl.burst < 1 || rl.burst > 1e6) {
			errs = append(errs, fmt.Errorf("%s_BURST %d: want 1..1000000", rl.name, rl.burst))
		}
	}
	if c.RateLimitKeys < 1000 || c.RateLimitKeys > 10_000_000 {
		errs = append(errs, fmt.Errorf("RATE_LIMIT_KEYS %d: want 1000..10000000", c.RateLimitKeys))
	}
	if _, err := clientaddr.ParsePrefixes(c.TrustedProxies); err != nil {
		errs = append(errs, fmt.Errorf("TRUSTED_PROXIES entry %w", err))
	}
	if c.MaxBodyBytes < 1024 || c.MaxBodyBytes > 16<<20 {
		errs = append(errs, fmt.Errorf("MAX_BODY_BYTES %d: want 1024..16777216", c.MaxBodyBytes))
	}
	return errs
}

// validateSignIn checks tokens, their cache, password hashing, sign-in attempts and
// the cursor secret.
func (c Config) validateSignIn() []error {
	var errs []error
	if c.TokenTTL < 0 || (c.TokenTTL > 0 && c.TokenTTL < time.Minute) {
		errs = append(errs, fmt.Errorf("TOKEN_TTL %s: want 0 (no expiry) or at least 1m", c.TokenTTL))
	}
	if c.AuthCacheTTL < 0 || c.AuthCacheTTL > time.Minute {
		errs = append(errs, fmt.Errorf("AUTH_CACHE_TTL %s: want 0 to 1m", c.AuthCacheTTL))
	}
	if c.AuthCacheSize < 1000 || c.AuthCacheSize > 10_000_000 {
		errs = append(errs, fmt.Errorf("AUTH_CACHE_SIZE %d: want 1000..10000000", c.AuthCacheSize))
	}
	if c.PasswordHashMemory < 1024 || c.PasswordHashMemory > 4<<20 || c.PasswordHashTime < 1 || c.PasswordHashTime > 100 ||
		c.PasswordHashThreads < 1 || c.PasswordHashThreads > 64 {
		errs = append(errs, fmt.Errorf("PASSWORD_HASH_MEMORY %d, PASSWORD_HASH_TIME %d, PASSWORD_HASH_THREADS %d: want 1024..4194304 KiB, 1..100 and 1..64",
			c.PasswordHashMemory, c.PasswordHashTime, c.PasswordHashThreads))
	}
	if c.PasswordHashConcurrency < 1 || c.PasswordHashConcurrency > 1024 {
		errs = append(errs, fmt.Errorf("PASSWORD_HASH_CONCURRENCY %d: want 1..1024", c.PasswordHashConcurrency))
	}
	if c.SignInPerEmail < 1 || c.SignInPerAddress < 1 || c.SignInWindow < time.Second {
		errs = append(errs, fmt.Errorf("SIGN_IN_ATTEMPTS_PER_EMAIL %d, SIGN_IN_ATTEMPTS_PER_ADDRESS %d, SIGN_IN_WINDOW %s: want at least 1, 1 and 1s",
			c.SignInPerEmail, c.SignInPerAddress, c.SignInWindow))
	}
	if c.CursorSecret != "" && len(c.CursorSecret) < todos.MinCursorKeyLen {
		errs = append(errs, fmt.Errorf("CURSOR_SECRET of %d bytes: want at least %d", len(c.CursorSecret), todos.MinCursorKeyLen))
	}
	return errs
}

// validateReadSide checks the read model, the stream /health/sync reports on, its
// alert thresholds, and the caches and waits of the read routes.
func (c Config) validateReadSide() []error {
	var errs []error
	if c.LeaderboardCacheTTL < 0 || c.LeaderboardCacheTTL > time.Minute {
		errs = append(errs, fmt.Errorf("LEADERBOARD_CACHE_TTL %s: want 0 to 1m", c.LeaderboardCacheTTL))
	}
	if c.ReadYourWritesWait < 0 || c.ReadYourWritesWait > time.Minute {
		errs = append(errs, fmt.Errorf("READ_YOUR_WRITES_WAIT %s: want 0 to 1m", c.ReadYourWritesWait))
	}
	if !strings.HasPrefix(c.MongoURI, "mongodb://") && !strings.HasPrefix(c.MongoURI, "mongodb+srv://") {
		errs = append(errs, fmt.Errorf("MONGODB_URI %s: want a mongodb:// or mongodb+srv:// URI", redact.URL(c.MongoURI)))
	}
	if c.MongoDatabase == "" {
		errs = append(errs, errors.New("MONGODB_DATABASE: must not be empty"))
	}
	if c.MongoTimeout < 100*time.Millisecond {
		errs = append(errs, fmt.Errorf("MONGODB_TIMEOUT %s: want at least 100ms", c.MongoTimeout))
	}
	if c.NATSURL == "" || c.Stream == "" || c.Consumer == "" {
		errs = append(errs, errors.New("NATS_URL, STREAM_NAME and CONSUMER_NAME must not be empty"))
	}
	for name, d := range map[string]time.Duration{"SYNC_OUTBOX_AGE_WARN": c.SyncOutboxAgeWarn, "SYNC_OUTBOX_AGE_CRIT": c.SyncOutboxAgeCrit,
		"SYNC_LAG_WARN": c.SyncLagWarn, "SYNC_LAG_CRIT": c.SyncLagCrit} {
		if d < 0 {
			errs = append(errs, fmt.Errorf("%s %s: must not be negative", name, d))
		}
	}
	for name, n := range map[string]int64{"SYNC_BACKLOG_WARN": c.SyncBacklogWarn, "SYNC_BACKLOG_CRIT": c.SyncBacklogCrit,
		"SYNC_PENDING_WARN": c.SyncPendingWarn, "SYNC_PENDING_CRIT": c.SyncPendingCrit} {
		if n < 0 {
			errs = append(errs, fmt.Errorf("%s %d: must not be negative", name, n))
		}
	}
	if err := c.NATS.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errs
}

// LogValue is the loggable form of c: the passwords of the URLs masked, and of the
// cursor secret only whether it is set.
func (c Config) LogValue() slog.Value { return envconfig.LogValue(c) }
