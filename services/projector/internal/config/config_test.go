package config_test

import (
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/mongo/writeconcern"

	"github.com/outboxtodo/outboxtodo/services/projector/internal/config"
)

func TestLoad(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		wantErr string // substring; "" means valid
		check   func(t *testing.T, c config.Config)
	}{
		{name: "defaults", check: func(t *testing.T, c config.Config) {
			if c.Stream != "TODO_EVENTS" || c.AckWait != 30*time.Second || c.MaxDeliver != 10 || c.AdminAddr != ":9092" || len(c.BackOff) != 0 {
				t.Errorf("defaults = %+v", c)
			}
		}},
		{name: "backoff list", env: map[string]string{"BACKOFF": "15s,30s,1m", "MAX_DELIVER": "5"}, check: func(t *testing.T, c config.Config) {
			if len(c.BackOff) != 3 || c.BackOff[2] != time.Minute {
				t.Errorf("backoff = %v", c.BackOff)
			}
		}},
		// The durable's MaxDeliver is -1 whatever MAX_DELIVER says, so JetStream's rule
		// that it exceed the BACKOFF steps does not apply: the steps past it go unused.
		{name: "backoff longer than max deliver", env: map[string]string{"BACKOFF": "15s,30s,1m", "MAX_DELIVER": "2"}},
		{name: "backoff shorter than a write attempt", env: map[string]string{"BACKOFF": "1s,30s"}, wantErr: "first BACKOFF step must exceed"},
		{name: "unlimited deliveries", env: map[string]string{"MAX_DELIVER": "-1"}},
		{name: "zero max deliver", env: map[string]string{"MAX_DELIVER": "0"}, wantErr: "MAX_DELIVER 0"},
		{name: "mongo timeout not below ack wait", env: map[string]string{"ACK_WAIT": "5s", "MONGODB_TIMEOUT": "5s"}, wantErr: "must stay below ACK_WAIT"},
		{name: "bad prefix", env: map[string]string{"SUBJECT_PREFIX": "todo.*"}, wantErr: "SUBJECT_PREFIX"},
		{name: "bad uri", env: map[string]string{"MONGODB_URI": "http://x"}, wantErr: "MONGODB_URI"},
		{name: "ferretdb backend", env: map[string]string{"FERRETDB_POSTGRESQL_URL": "postgres://postgres@127.0.0.1:5432/todo_ferretdb"}, check: func(t *testing.T, c config.Config) {
			if c.FerretDBPostgreSQLURL != "postgres://postgres@127.0.0.1:5432/todo_ferretdb" {
				t.Errorf("ferretdb postgresql url = %q", c.FerretDBPostgreSQLURL)
			}
		}},
		{name: "bad ferretdb backend", env: map[string]string{"FERRETDB_POSTGRESQL_URL": "mongodb://x"}, wantErr: "FERRETDB_POSTGRESQL_URL"},
		{name: "all problems at once", env: map[string]string{"BATCH_SIZE": "0", "WRITE_CONCURRENCY": "0"}, wantErr: "WRITE_CONCURRENCY 0"},
		{name: "write concern of two members, not journaled", env: map[string]string{"MONGODB_WRITE_CONCERN": "2", "MONGODB_WRITE_JOURNAL": "false"}},
		{name: "unacknowledged writes", env: map[string]string{"MONGODB_WRITE_CONCERN": "0"}, wantErr: "MONGODB_WRITE_CONCERN \"0\""},
		{name: "misspelt majority", env: map[string]string{"MONGODB_WRITE_CONCERN": "majorty"}, wantErr: "MONGODB_WRITE_CONCERN"},
		{name: "unparsable duration", env: map[string]string{"ACK_WAIT": "soon"}, wantErr: "AckWait"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			c, err := config.Load()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tt.check != nil {
				tt.check(t, c)
			}
		})
	}
}

func TestLogValueMasksPasswords(t *testing.T) {
	t.Setenv("MONGODB_URI", "mongodb://reader:hunter2@mongo:27017/")
	t.Setenv("NATS_URL", "nats://svc:natspw@nats:4222")
	t.Setenv("FERRETDB_POSTGRESQL_URL", "postgres://ferret:pgpw@db:5432/ferretdb")
	c, err := config.Load()
	if err != nil {
		t.Fatal(err)
	}
	s := c.LogValue().String()
	for _, secret := range []string{"hunter2", "natspw", "pgpw"} {
		if strings.Contains(s, secret) {
			t.Errorf("log value shows %q: %s", secret, s)
		}
	}
}

// The read model's write concern: majority and journaled unless configured otherwise;
// never unacknowledged.
func TestWriteConcern(t *testing.T) {
	yes, no := true, false
	tests := []struct {
		w       string
		journal bool
		want    *writeconcern.WriteConcern // nil: refused
	}{
		{"majority", true, &writeconcern.WriteConcern{W: "majority", Journal: &yes}},
		{"majority", false, &writeconcern.WriteConcern{W: "majority", Journal: &no}},
		{"1", true, &writeconcern.WriteConcern{W: 1, Journal: &yes}},
		{"3", false, &writeconcern.WriteConcern{W: 3, Journal: &no}},
		{"0", false, nil},
		{"-1", true, nil},
		{"", true, nil},
		{"Majority", true, nil},
		{"dc-east", true, nil},
	}
	for _, tt := range tests {
		c := config.Config{MongoWriteConcern: tt.w, MongoWriteJournal: tt.journal}
		got, err := c.WriteConcern()
		if tt.want == nil {
			if err == nil {
				t.Errorf("w=%q: got %+v, want an error", tt.w, got)
			}
			continue
		}
		if err != nil || got.W != tt.want.W || got.Journal == nil || *got.Journal != *tt.want.Journal || !got.IsValid() || !got.Acknowledged() {
			t.Errorf("w=%q j=%v: got %+v, %v; want %+v", tt.w, tt.journal, got, err, tt.want)
		}
	}
	t.Run("default", func(t *testing.T) {
		c, err := config.Load()
		if err != nil {
			t.Fatal(err)
		}
		wc, err := c.WriteConcern()
		if err != nil || wc.W != "majority" || wc.Journal == nil || !*wc.Journal {
			t.Fatalf("default write concern = %+v, %v; want majority, journaled", wc, err)
		}
	})
}
