package store

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
)

// postgresConns caps one Store's connections to PostgreSQL. Each node of a
// deployment has its own pool, so the server's max_connections (100 by
// default) must exceed postgresConns times the nodes.
const postgresConns = 16

// openPostgres opens the PostgreSQL database at connString (a URL or
// key=value string as pgx takes it) and brings its schema up to date.
// Neither connString nor what pgx says of it carries a password into an
// error.
func openPostgres(ctx context.Context, connString string) (*Store, error) {
	cfg, err := pgx.ParseConfig(connString)
	if err != nil {
		// pgx's parse error shows the string with its password masked.
		return nil, fmt.Errorf("open store: database: %w", err)
	}
	d := &postgresDialect{}
	p := stdlib.OpenDB(*cfg)
	p.SetMaxOpenConns(postgresConns)
	p.SetMaxIdleConns(postgresConns)
	where := fmt.Sprintf("postgres database %q on %s:%d as %q", cfg.Database, cfg.Host, cfg.Port, cfg.User)
	if err := p.PingContext(ctx); err != nil {
		p.Close()
		return nil, fmt.Errorf("open store: %s: %w", where, err)
	}
	if err := migrate(ctx, db{p, d}); err != nil {
		p.Close()
		return nil, fmt.Errorf("open store: %s: %w", where, err)
	}
	return &Store{db: db{p, d}, rdb: db{p, d}, d: d}, nil
}
