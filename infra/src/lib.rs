//! The platform's infrastructure as real processes: nats-server, PostgreSQL
//! and Redis, found or installed where the project keeps its tools, started
//! with persistent data for `cargo xtask up` ([`infra`]) or throwaway for
//! tests.
//!
//! For tests every server is a real process on a free port, so tests never
//! share state and never depend on a developer's own services:
//!
//! - [`fresh_database`] hands out a new, empty database on one PostgreSQL
//!   server per test process (or on `TEST_DATABASE_URL`, when set).
//! - [`NatsServer::start`] and [`RedisServer::start`] give each caller its own
//!   server, which [`stop`](NatsServer::stop) and
//!   [`restart`](NatsServer::restart) on the same port and data, to simulate an
//!   outage and the recovery from it.
//!
//! Servers run under a small shell watchdog that holds a pipe from this
//! process: when the process ends, even by abort, the pipe closes and the
//! watchdog stops the server. [`binaries`] finds the programs.
//!
//! [`http_get`] reads a server's admin port; [`fault_proxy`] puts a TCP
//! proxy between a service and one of these servers, to inject latency,
//! partitions and dropped connections. [`collector`] receives the spans the
//! services export over OTLP.

pub mod binaries;
pub mod collector;
pub mod fault_proxy;
pub mod infra;
mod postgres;
mod probe;
pub mod throwaway;

pub use infra::free_port;
pub use postgres::{Postgres, fresh_database};
pub use probe::http_get;
pub use throwaway::{NatsCluster, NatsServer, PostgresServer, RedisServer};
