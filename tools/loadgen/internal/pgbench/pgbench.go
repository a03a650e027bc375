// Package pgbench runs PostgreSQL's pgbench with a custom script (the create
// transaction: a todo row, its owner's counts with the cap check, its outbox row with
// the counts' snapshot and the publisher's conditional wake-up, in one transaction) and
// reads its summary: the database's own capacity for the API's write, the yardstick of
// the benchmark's ratios.
package pgbench

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/outboxtodo/outboxtodo/shared/outbox"
)

// Result is pgbench's summary of one run.
type Result struct {
	Clients      int     `json:"clients"`
	Transactions int64   `json:"transactions"`
	TPS          float64 `json:"tps"`
	LatencyAvgMS float64 `json:"latency_avg_ms"`
	LatencyStdMS float64 `json:"latency_stddev_ms"`
	Failed       int64   `json:"failed"`
}

// Script is one create as the API runs it (see services/api/internal/postgres,
// CreateTodo, and shared/outbox): insert the todo; add it to the owner's user_stats
// row, bumping its version, under the cap of todos per user (MAX_TODOS_PER_USER's
// default); insert its outbox row, with a payload of the envelope's size plus the
// stats snapshot read from that row; notify the publisher if one is idle and listening
// (outbox.NotifySQL; the benchmark's publisher is busy); commit. Each pgbench client
// writes for a user of its own (client_id + 1), as each API client of the benchmark
// signs up its own user, so that neither waits on another's stats row. (A space
// follows every colon of the JSON: pgbench reads ":name" as a variable.) SetupSQL
// creates the users beforehand.
var Script = ScriptWith(strings.ReplaceAll(outbox.NotifySQL, "$1", "'"+outbox.Channel+"'"))

// ScriptWith is Script with another notification statement in place of the conditional
// one (empty: none), to measure what notifying costs the commit.
func ScriptWith(notify string) string {
	if notify != "" {
		notify += ";\n"
	}
	return createSQL + notify + "COMMIT;\n"
}

const createSQL = `\set u :client_id + 1
BEGIN;
INSERT INTO todos (id, user_id, title, notes, completed, completed_at, due, priority, version, created_at, updated_at)
VALUES (gen_random_uuid(), ('00000000-0000-4000-8000-' || lpad(:u::text, 12, '0'))::uuid, 'pgbench todo', NULL, false, NULL, NULL, 'normal', 1, now(), now());
UPDATE user_stats SET open = open + 1, completed = completed + 0, version = version + 1
WHERE user_id = ('00000000-0000-4000-8000-' || lpad(:u::text, 12, '0'))::uuid AND (10000::BIGINT = 0 OR open + completed + 1 + 0 <= 10000);
INSERT INTO outbox (event_id, aggregate_type, aggregate_id, aggregate_version, event_type, partition_key, partition, payload, created_at)
SELECT gen_random_uuid(), 'todo', gen_random_uuid(), 1, 'todo.created', s.user_id, :u % 64,
       '{"id": "0193a1f2-7c1e-7b3a-9f00-000000000000","type": "todo.created","schema_version": 1,"aggregate_type": "todo","aggregate_id": "0193a1f2-7c1e-7b3a-9f00-000000000001","version": 1,"owner_id": "00000000-0000-4000-8000-000000000001","occurred_at": "2026-01-01T00:00:00Z","trace": {"request_id": "pgbench"},"data": {"id": "0193a1f2-7c1e-7b3a-9f00-000000000001","user_id": "00000000-0000-4000-8000-000000000001","title": "pgbench todo","notes": null,"completed": false,"completed_at": null,"due": null,"priority": "normal","version": 1,"created_at": "2026-01-01T00:00:00Z","updated_at": "2026-01-01T00:00:00Z"}}'::jsonb
       || jsonb_build_object('stats', jsonb_build_object('open', s.open, 'completed', s.completed, 'version', s.version, 'deleted', s.deleted)),
       now()
FROM user_stats s WHERE s.user_id = ('00000000-0000-4000-8000-' || lpad(:u::text, 12, '0'))::uuid;
`

// SetupSQL creates the users the script writes for, each with its user_stats row.
func SetupSQL(users int) string {
	return fmt.Sprintf(`INSERT INTO users (id, email, display_name, version, created_at, updated_at)
SELECT ('00000000-0000-4000-8000-' || lpad(i::text, 12, '0'))::uuid, 'pgbench' || i || '@example.com', 'pgbench ' || i, 1, now(), now()
FROM generate_series(1, %[1]d) AS i ON CONFLICT DO NOTHING;
INSERT INTO user_stats (user_id, open, completed, version)
SELECT ('00000000-0000-4000-8000-' || lpad(i::text, 12, '0'))::uuid, 0, 0, 1
FROM generate_series(1, %[1]d) AS i ON CONFLICT DO NOTHING`, users)
}

// Run runs Script with pgbench against databaseURL with clients connections (and as
// many threads, up to 2) for d, after the caller created at least clients users with
// SetupSQL.
func Run(ctx context.Context, databaseURL string, clients int, d time.Duration, dir string) (Result, error) {
	return RunScript(ctx, databaseURL, Script, clients, d, dir)
}

// RunScript is Run with another script.
func RunScript(ctx context.Context, databaseURL, text string, clients int, d time.Duration, dir string) (Result, error) {
	script := filepath.Join(dir, "create.sql")
	if err := os.WriteFile(script, []byte(text), 0o644); err != nil {
		return Result{}, fmt.Errorf("write pgbench script: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, d+time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "pgbench", "-n", "-M", "prepared", "-c", strconv.Itoa(clients), "-j", strconv.Itoa(min(clients, 2)),
		"-T", strconv.Itoa(int(d.Seconds())), "-f", script, databaseURL)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return Result{}, fmt.Errorf("pgbench: %w: %s", err, out)
	}
	r, err := Parse(string(out))
	if err != nil {
		return Result{}, fmt.Errorf("%w in:\n%s", err, out)
	}
	return r, nil
}

// Parse reads pgbench's summary (PostgreSQL 13 and later print it in this form).
func Parse(out string) (Result, error) {
	var r Result
	var haveTPS, haveLat bool
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		key, val, ok := strings.Cut(line, ":")
		if !ok {
			key, val, ok = strings.Cut(line, "=")
		}
		if !ok {
			continue
		}
		key, val = strings.TrimSpace(key), strings.TrimSpace(val)
		first := func() string {
			f := strings.Fields(val)
			if len(f) == 0 {
				return ""
			}
			return f[0]
		}
		var err error
		switch {
		case key == "number of clients":
			r.Clients, err = strconv.Atoi(first())
		case key == "number of transactions actually processed":
			r.Transactions, err = strconv.ParseInt(strings.SplitN(first(), "/", 2)[0], 10, 64)
		case key == "number of failed transactions":
			r.Failed, err = strconv.ParseInt(first(), 10, 64)
		case key == "latency average":
			r.LatencyAvgMS, err = strconv.ParseFloat(first(), 64)
			haveLat = true
		case key == "latency stddev":
			r.LatencyStdMS, err = strconv.ParseFloat(first(), 64)
		case strings.HasPrefix(key, "tps") && strings.Contains(line, "without initial connection time"):
			r.TPS, err = strconv.ParseFloat(first(), 64)
			haveTPS = true
		}
		if err != nil {
			return Result{}, fmt.Errorf("pgbench output %q: %w", line, err)
		}
	}
	if !haveTPS || !haveLat {
		return Result{}, fmt.Errorf("pgbench output: no tps or latency average")
	}
	return r, nil
}
