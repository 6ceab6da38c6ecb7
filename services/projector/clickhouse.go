package projector

import (
	"context"
	"fmt"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	chschema "github.com/otawatch/otawatch/schemas/clickhouse"
	"github.com/otawatch/otawatch/services/internal/conf"
)

// Open connects to the ClickHouse server of cfg with the native protocol (the
// HTTP mode of clickhouse-go fails on ClickHouse 18.16), creates database if
// it does not exist, and returns a connection whose queries run in it. It
// does not apply the schema: see Migrate.
func Open(ctx context.Context, cfg Config, database string) (driver.Conn, error) {
	// The database must exist before a connection can name it, so a first
	// connection (to the server's default database) creates it.
	boot, err := Dial(ctx, cfg, "")
	if err != nil {
		return nil, err
	}
	err = boot.Exec(ctx, "CREATE DATABASE IF NOT EXISTS "+quoteIdent(database))
	boot.Close()
	if err != nil {
		return nil, fmt.Errorf("create database %s on %s: %w", database, cfg.Addr, err)
	}
	return Dial(ctx, cfg, database)
}

// Dial connects to the ClickHouse server of cfg, with database as the
// default database of queries ("" for the server's), and checks the
// connection.
func Dial(ctx context.Context, cfg Config, database string) (driver.Conn, error) {
	password, err := conf.ReadSecret(cfg.PasswordFile)
	if err != nil {
		return nil, fmt.Errorf("clickhouse password: %w", err)
	}
	conn, err := clickhouse.Open(&clickhouse.Options{
		Protocol:        clickhouse.Native,
		Addr:            []string{cfg.Addr},
		Auth:            clickhouse.Auth{Database: database, Username: cfg.Username, Password: password},
		DialTimeout:     5 * time.Second,
		ReadTimeout:     60 * time.Second,
		MaxOpenConns:    16,
		MaxIdleConns:    8,
		ConnMaxLifetime: time.Hour,
		ClientInfo:      clickhouse.ClientInfo{Products: []struct{ Name, Version string }{{Name: "otawatch", Version: "1"}}},
	})
	if err != nil {
		return nil, fmt.Errorf("open clickhouse %s: %w", cfg.Addr, err)
	}
	if err := conn.Ping(ctx); err != nil {
		conn.Close()
		return nil, fmt.Errorf("connect to clickhouse %s: %w", cfg.Addr, err)
	}
	return conn, nil
}

// quoteIdent quotes a database or table name for ClickHouse SQL. Names
// passed events.ValidateID ([A-Za-z0-9_-]), but "-" still needs quoting.
func quoteIdent(name string) string { return "`" + name + "`" }

// Migrate applies the numbered schema files of schemas/clickhouse that
// conn's database has not recorded in schema_migrations, in order, and
// records each. Every statement is idempotent, so two projectors starting at
// once, or a crash between a file and its record, do no harm. It returns the
// versions it applied.
func Migrate(ctx context.Context, conn driver.Conn) ([]uint32, error) {
	for _, stmt := range chschema.Bootstrap() {
		if err := conn.Exec(ctx, stmt); err != nil {
			return nil, fmt.Errorf("create schema_migrations: %w", err)
		}
	}
	ms, err := chschema.Migrations()
	if err != nil {
		return nil, err
	}
	done, err := appliedVersions(ctx, conn)
	if err != nil {
		return nil, err
	}
	var now []uint32
	for _, m := range ms {
		if done[m.Version] {
			continue
		}
		for i, stmt := range m.Statements {
			if err := conn.Exec(ctx, stmt); err != nil {
				return now, fmt.Errorf("schema %s statement %d: %w", m.Name, i+1, err)
			}
		}
		b, err := conn.PrepareBatch(ctx, "INSERT INTO schema_migrations (version, name, applied_at)")
		if err != nil {
			return now, fmt.Errorf("record schema %s: %w", m.Name, err)
		}
		if err := b.Append(m.Version, m.Name, time.Now().UTC()); err != nil {
			b.Close()
			return now, fmt.Errorf("record schema %s: %w", m.Name, err)
		}
		if err := b.Send(); err != nil {
			return now, fmt.Errorf("record schema %s: %w", m.Name, err)
		}
		now = append(now, m.Version)
	}
	return now, nil
}

func appliedVersions(ctx context.Context, conn driver.Conn) (map[uint32]bool, error) {
	rows, err := conn.Query(ctx, "SELECT DISTINCT version FROM schema_migrations")
	if err != nil {
		return nil, fmt.Errorf("read schema_migrations: %w", err)
	}
	defer rows.Close()
	done := map[uint32]bool{}
	for rows.Next() {
		var v uint32
		if err := rows.Scan(&v); err != nil {
			return nil, fmt.Errorf("read schema_migrations: %w", err)
		}
		done[v] = true
	}
	return done, rows.Err()
}
