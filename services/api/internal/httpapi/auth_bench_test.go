package httpapi_test

import (
	"crypto/rand"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/outboxtodo/outboxtodo/migrations/dbtest"
	"github.com/outboxtodo/outboxtodo/services/api/internal/httpapi"
	"github.com/outboxtodo/outboxtodo/services/api/internal/postgres"
)

// BenchmarkAuthentication answers an authenticated request that fails its path check
// right after authentication (GET /v1/todos/not-a-uuid: 400), so that it times the
// token's check and little else: "lookup" asks PostgreSQL every request
// (AUTH_CACHE_TTL 0), "cached" trusts the replica's cache. Run it with
// `go test -run '^$' -bench Authentication ./internal/httpapi/`.
func BenchmarkAuthentication(b *testing.B) {
	pool, _ := dbtest.NewPool(b)
	store := postgres.New(pool, false)
	for _, c := range []struct {
		name string
		ttl  time.Duration
	}{{"lookup", 0}, {"cached", time.Second}} {
		b.Run(c.name, func(b *testing.B) {
			h, err := httpapi.New(httpapi.Options{
				Store: store, Log: slog.New(slog.DiscardHandler), Metrics: prometheus.NewRegistry(),
				RequestTimeout: 10 * time.Second, MaxBodyBytes: 64 << 10, CursorKey: []byte(rand.Text() + rand.Text()),
				AuthCacheTTL: c.ttl,
			})
			if err != nil {
				b.Fatal(err)
			}
			rec := httptest.NewRecorder()
			signUp := httptest.NewRequest("POST", "/v1/users", strings.NewReader(`{"email":"`+strings.ToLower(rand.Text())+`@example.com","display_name":"B"}`))
			signUp.Header.Set("Content-Type", "application/json")
			h.ServeHTTP(rec, signUp)
			var su struct{ Token string }
			if rec.Code != http.StatusCreated {
				b.Fatalf("sign-up: %d %s", rec.Code, rec.Body)
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &su); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for b.Loop() {
				r := httptest.NewRequest("GET", "/v1/todos/not-a-uuid", nil)
				r.Header.Set("Authorization", "Bearer "+su.Token)
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, r)
				if rec.Code != http.StatusBadRequest {
					b.Fatalf("%d %s", rec.Code, rec.Body)
				}
			}
		})
	}
}
