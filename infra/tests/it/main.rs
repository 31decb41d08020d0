//! shop-infra's integration tests, as one binary: one link instead of one per file.

mod fault_proxy;
mod servers;
