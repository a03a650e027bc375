package bench

import (
	"testing"
)

func TestCatchUpSeconds(t *testing.T) {
	t.Parallel()
	out := []byte(`{"level":"INFO","msg":"config","service":"projector"}
not json at all
{"level":"INFO","msg":"rebuild caught up","database":"x","stream_seq":20000,"seconds":41.5}
{"level":"INFO","msg":"read model switched","from":"a","to":"x"}`)
	if got, ok := catchUpSeconds(out); !ok || got != 41.5 {
		t.Fatalf("catchUpSeconds = %v, %v; want 41.5", got, ok)
	}
	if _, ok := catchUpSeconds([]byte(`{"msg":"read model switched"}`)); ok {
		t.Fatal("no catch-up record: want false")
	}
}

func TestConfigDefaultsAndValidation(t *testing.T) {
	// Not parallel: t.Setenv.
	cfg, err := LoadConfig()
	if err != nil {
		t.Fatalf("defaults: %v", err)
	}
	if cfg.Clients != 32 || cfg.CompletePct+cfg.DeletePct > 100 {
		t.Fatalf("defaults = %+v", cfg)
	}
	for key, val := range map[string]string{
		"LOADGEN_CLIENTS":      "0",
		"LOADGEN_COMPLETE_PCT": "90",
		"LOADGEN_STEP":         "1s",
		"LOADGEN_CEILING_BULK": "5000",
		"LOADGEN_POLL":         "0s",
	} {
		t.Run(key, func(t *testing.T) {
			t.Setenv(key, val)
			if _, err := LoadConfig(); err == nil {
				t.Fatalf("%s=%s: want an error", key, val)
			}
		})
	}
	t.Setenv("LOADGEN_ADMIN_DATABASE_URL", "postgres://u:hunter2@db/postgres")
	cfg, err = LoadConfig()
	if err != nil {
		t.Fatal(err)
	}
	if m := cfg.Masked().AdminURL; m == cfg.AdminURL {
		t.Fatalf("Masked kept the password: %s", m)
	}
}
