//! svc-inventory's integration tests, as one binary: one link instead of one per file.

mod races;
mod refunds;
mod sweeper;
