//! system-tests's integration tests, as one binary: one link instead of one per file.

mod catalog;
mod identity;
mod observe;
mod operations;
mod processes;
mod saga;
mod support;
mod watch;
