//! shop-runtime's integration tests, as one binary: one link instead of one per file.

mod cluster;
mod database;
mod dlq;
mod event_vectors;
mod host;
mod messaging;
mod retries;
mod support;
mod upstream;
