// Package process runs a service's main: a JSON logger with a service attribute, a
// context cancelled by SIGINT and SIGTERM, an exit code from the returned error, HTTP
// servers that drain in-flight requests on shutdown, the group of long-running
// tasks (RunTasks) that a service's composition root starts and stops together, and
// the ticking loop (Every) such a task runs.
package process

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

// Main runs fn with a context that is cancelled on SIGINT or SIGTERM and exits with
// status 1 if fn fails. The error is logged here, once.
func Main(service string, fn func(ctx context.Context, log *slog.Logger) error) {
	log, err := NewLogger(os.Stderr, service, os.Getenv("LOG_LEVEL"))
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", service, err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err = fn(ctx, log)
	stop()
	if err != nil {
		log.Error("exiting on error", "error", err)
		os.Exit(1)
	}
	log.Info("stopped")
}

// NewLogger returns a JSON logger tagged with the service name. level is debug, info
// (the default when empty), warn or error.
func NewLogger(w io.Writer, service, level string) (*slog.Logger, error) {
	var l slog.Level
	if level != "" {
		if err := l.UnmarshalText([]byte(strings.ToUpper(level))); err != nil {
			return nil, fmt.Errorf("LOG_LEVEL %q: want debug, info, warn or error", level)
		}
	}
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: l})).With("service", service), nil
}

// Serve runs srv on ln until ctx is cancelled, then shuts it down, letting in-flight
// requests finish for up to drain. It returns nil after a clean shutdown.
func Serve(ctx context.Context, srv *http.Server, ln net.Listener, drain time.Duration) error {
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	shutCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), drain)
	defer cancel()
	if err := srv.Shutdown(shutCtx); err != nil {
		_ = srv.Close()
		<-errc
		return fmt.Errorf("drain %s: %w", ln.Addr(), err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve %s: %w", ln.Addr(), err)
	}
	return nil
}

// App is a service as its composition root builds it.
type App interface {
	// Run runs the service's tasks until ctx ends or one fails.
	Run(ctx context.Context) error
	// Close releases what building the service opened.
	Close() error
}

// RunApp logs the configuration load returns (its LogValue masks the secrets), builds
// a service from it with build, runs it until ctx ends, and closes it. It returns every error on the way, for Main to log
// once. A service's main passes its config.Load; end-to-end tests pass a config of
// their own and run the service exactly as main does.
func RunApp[C any, A App](ctx context.Context, log *slog.Logger, load func() (C, error),
	build func(context.Context, C, *slog.Logger) (A, error)) error {
	cfg, err := load()
	if err != nil {
		return err
	}
	log.Info("starting", "config", cfg)
	a, err := build(ctx, cfg, log)
	if err != nil {
		return err
	}
	return errors.Join(a.Run(ctx), a.Close())
}

// closeTimeout bounds each release of a Closer, so that a server that does not answer
// cannot hold up the end of the process.
const closeTimeout = 5 * time.Second

// Closer collects what a composition root opens, to release it in reverse order. The
// zero value is ready to use.
type Closer struct {
	fns []func(ctx context.Context) error
}

// Add registers fn, to be called by Close with a context of its own that ends after
// a few seconds.
func (c *Closer) Add(fn func(ctx context.Context) error) { c.fns = append(c.fns, fn) }

// CloseOnError closes c when *err holds an error, joining Close's errors to it: a
// constructor defers it so that a failure halfway releases what was opened before.
func (c *Closer) CloseOnError(err *error) {
	if *err != nil {
		*err = errors.Join(*err, c.Close())
	}
}

// Close calls the registered functions, the last added first, and returns their
// errors joined. Each runs once: a second Close does nothing.
func (c *Closer) Close() error {
	var errs []error
	for i := len(c.fns) - 1; i >= 0; i-- {
		ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
		errs = append(errs, c.fns[i](ctx))
		cancel()
	}
	c.fns = nil
	return errors.Join(errs...)
}
