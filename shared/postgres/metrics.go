package postgres

import (
	"github.com/IBM/pgxpoolprometheus"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
)

// PoolCollector exports pool's statistics, read at each scrape, as the pgxpool_* series
// (pgxpool_acquired_conns, pgxpool_max_conns, pgxpool_empty_acquire, ...) labelled
// pool=name, so that a process with several pools tells them apart. Register it on the
// admin server's registry.
func PoolCollector(pool *pgxpool.Pool, name string) prometheus.Collector {
	return pgxpoolprometheus.NewCollector(pool, map[string]string{"pool": name})
}
