// Package pgadmin creates the PostgreSQL databases the local stack needs, so that a new
// machine needs no manual step.
package pgadmin

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outboxtodo/outboxtodo/shared/postgres"
	"github.com/outboxtodo/outboxtodo/shared/redact"
)

// EnsureDatabase creates the database named in databaseURL when it does not exist,
// connecting to the server's postgres database to do so.
func EnsureDatabase(ctx context.Context, databaseURL string) error {
	u, err := url.Parse(databaseURL)
	if err != nil {
		return fmt.Errorf("parse %s: %w", redact.URL(databaseURL), err)
	}
	name := strings.Trim(u.Path, "/")
	if name == "" || strings.Contains(name, `"`) {
		return fmt.Errorf("database url %s must name a database (without quotes)", redact.URL(databaseURL))
	}
	admin := *u
	admin.Path = "/postgres"
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, admin.String())
	if err != nil {
		return fmt.Errorf("connect to %s: %w", admin.Redacted(), err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var exists bool
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, name).Scan(&exists); err != nil {
		return fmt.Errorf("look up database %s: %w", name, err)
	}
	if exists {
		return nil
	}
	// The name cannot be a parameter; it was checked for quotes above.
	if _, err := conn.Exec(ctx, `CREATE DATABASE "`+name+`"`); err != nil && postgres.SQLState(err) != "42P04" {
		return fmt.Errorf("create database %s: %w", name, err)
	}
	return nil
}
