//! What the benchmarks share: their knobs from the environment, latency
//! histograms, and the table they print.

pub mod cart;

use std::{fmt::Display, str::FromStr};

pub use shop_measure::{Errors, Latencies, Table, ms};

/// A comma-separated list from `name` (e.g. `BENCH_CONCURRENCY=1,8,32`),
/// or `default`; entries that do not parse are skipped.
pub fn env_list<T: FromStr>(name: &str, default: &str) -> Vec<T> {
    std::env::var(name)
        .unwrap_or_else(|_| default.to_owned())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect()
}

/// The first entry of [`env_list`], for a single number.
pub fn env_number<T: FromStr + Copy + Display>(name: &str, default: T) -> T {
    env_list(name, &default.to_string()).first().copied().unwrap_or(default)
}
