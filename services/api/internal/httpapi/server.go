package httpapi

import (
	"log/slog"
	"net/http"
	"time"
)

// ServerLimits protect the server from slow and oversized requests.
type ServerLimits struct {
	// ReadHeaderTimeout cuts off a client that sends its headers too slowly
	// (slowloris); ReadTimeout bounds reading the whole request, body included.
	ReadHeaderTimeout time.Duration
	ReadTimeout       time.Duration
	// WriteTimeout bounds the handling and writing of a response.
	WriteTimeout time.Duration
	// IdleTimeout closes keep-alive connections that send nothing.
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds the request line and headers. net/http allows 4 KiB
	// more than this before it answers 431.
	MaxHeaderBytes int
}

// NewServer returns the HTTP server of the API's handler with limits applied. The
// server's own errors (TLS handshakes, cut-off clients) go to log at warn level.
func NewServer(handler http.Handler, l ServerLimits, log *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: l.ReadHeaderTimeout,
		ReadTimeout:       l.ReadTimeout,
		WriteTimeout:      l.WriteTimeout,
		IdleTimeout:       l.IdleTimeout,
		MaxHeaderBytes:    l.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
}
