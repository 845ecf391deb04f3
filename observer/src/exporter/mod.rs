//! `--prometheus ADDR`: cumulative GIL counters and histograms for a Prometheus server to scrape.
//! `totals` folds the kernel's per-thread numbers into per-group totals that never go down;
//! `server` answers `GET /metrics` from them.
pub mod address;
pub mod server;
pub mod totals;
