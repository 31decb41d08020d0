//! svc-gateway's integration tests, as one binary: one link instead of one per file.

mod drain;
mod edge;
mod journey;
mod support;
mod webhooks;
