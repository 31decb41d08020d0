//! What the benchmarks and the load generator measure, and how they show
//! it: latency histograms (HdrHistogram, microseconds), failed calls by
//! gRPC code, and a table printed as it is measured.

use std::{collections::BTreeMap, fmt::Display, time::Duration};

use hdrhistogram::Histogram;

/// Latencies in microseconds, from 1 µs to a minute, 3 significant digits.
pub struct Latencies(Histogram<u64>);

impl Default for Latencies {
    fn default() -> Self {
        Self(Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds"))
    }
}

impl Latencies {
    pub fn record(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.0.saturating_record(micros.clamp(1, 60_000_000));
    }

    /// Adds another worker's latencies.
    pub fn merge(&mut self, other: &Latencies) {
        // Both have the same bounds, so adding cannot fail.
        let _ = self.0.add(&other.0);
    }

    pub fn count(&self) -> u64 {
        self.0.len()
    }

    /// The latency at quantile `q` (0.5 for p50), in milliseconds.
    pub fn ms_at(&self, q: f64) -> f64 {
        self.0.value_at_quantile(q) as f64 / 1000.0
    }

    pub fn max_ms(&self) -> f64 {
        self.0.max() as f64 / 1000.0
    }

    pub fn mean_ms(&self) -> f64 {
        self.0.mean() / 1000.0
    }
}

/// Failed calls by gRPC code, each with the message of its first call, so
/// a report says what went wrong and not only how.
#[derive(Default)]
pub struct Errors(BTreeMap<String, (u64, String)>);

impl Errors {
    pub fn record(&mut self, status: &tonic::Status) {
        let (count, _) = self
            .0
            .entry(format!("{:?}", status.code()))
            .or_insert_with(|| (0, status.message().to_owned()));
        *count += 1;
    }

    pub fn merge(&mut self, other: &Errors) {
        for (code, (count, message)) in &other.0 {
            self.0.entry(code.clone()).or_insert_with(|| (0, message.clone())).0 += count;
        }
    }

    pub fn total(&self) -> u64 {
        self.0.values().map(|(count, _)| count).sum()
    }
}

impl Display for Errors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_empty() {
            return f.write_str("0");
        }
        let list: Vec<String> = self
            .0
            .iter()
            .map(|(code, (n, message))| format!("{code}: {n} (e.g. {message:?})"))
            .collect();
        f.write_str(&list.join(", "))
    }
}

/// A table printed as it is measured: the header once, then a row per
/// measurement, columns right-aligned to their headers.
pub struct Table {
    widths: Vec<usize>,
}

impl Table {
    /// Prints the header. The first column is left-aligned (a name).
    pub fn new(columns: &[&str]) -> Self {
        let widths: Vec<usize> = columns.iter().map(|c| c.len().max(9)).collect();
        let table = Self { widths };
        table.row(columns.iter().map(|c| (*c).to_owned()).collect());
        table
    }

    pub fn row(&self, cells: Vec<String>) {
        let line: Vec<String> = cells
            .iter()
            .zip(&self.widths)
            .enumerate()
            .map(|(i, (cell, width))| match i {
                0 => format!("{cell:<width$}"),
                _ => format!("{cell:>width$}"),
            })
            .collect();
        println!("{}", line.join(" "));
    }
}

/// A number of milliseconds as a table cell.
pub fn ms(value: f64) -> String {
    format!("{value:.2}")
}
