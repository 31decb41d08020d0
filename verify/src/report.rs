//! What the checks found.

use std::fmt;

/// One broken invariant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// What it is about: order ids, payment ids, SKUs, event ids, subjects.
    pub ids: Vec<String>,
    /// A sentence naming those ids, e.g. `order … CONFIRMED but payment …
    /// is failed`.
    pub message: String,
}

/// One invariant, checked.
#[derive(Debug, Clone)]
pub struct Check {
    /// What was checked, as a sentence.
    pub name: &'static str,
    /// How many items it looked at, in `unit`s.
    pub covered: usize,
    /// What it counts, plural: "orders", "SKUs", "outbox rows".
    pub unit: &'static str,
    pub violations: Vec<Violation>,
}

impl Check {
    pub(crate) fn new(name: &'static str, unit: &'static str) -> Self {
        Self {
            name,
            covered: 0,
            unit,
            violations: Vec::new(),
        }
    }

    pub(crate) fn violation<I, S>(&mut self, ids: I, message: String)
    where
        I: IntoIterator<Item = S>,
        S: ToString,
    {
        self.violations.push(Violation {
            ids: ids.into_iter().map(|id| id.to_string()).collect(),
            message,
        });
    }

    pub fn is_clean(&self) -> bool {
        self.violations.is_empty()
    }
}

/// Every check of one reading of the books.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub checks: Vec<Check>,
    /// Checks not run, with why (the DLQ without a NATS connection).
    pub skipped: Vec<String>,
}

impl Report {
    /// Violations over all checks.
    pub fn violations(&self) -> usize {
        self.checks.iter().map(|c| c.violations.len()).sum()
    }

    pub fn is_clean(&self) -> bool {
        self.violations() == 0
    }

    /// The violations that involve `id` (an order id, SKU, event id, …),
    /// with the check that found each.
    pub fn naming<'a>(&'a self, id: &'a str) -> impl Iterator<Item = (&'a Check, &'a Violation)> + 'a {
        self.checks.iter().flat_map(move |check| {
            check
                .violations
                .iter()
                .filter(move |v| v.ids.iter().any(|i| i == id))
                .map(move |v| (check, v))
        })
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let violations = self.violations();
        writeln!(
            f,
            "{} checks, {}",
            self.checks.len(),
            match violations {
                0 => "the books are clean".to_owned(),
                1 => "1 violation".to_owned(),
                n => format!("{n} violations"),
            }
        )?;
        for check in &self.checks {
            let verdict = if check.is_clean() { "ok  " } else { "FAIL" };
            write!(f, "{verdict}  {} ({}: {}", check.name, check.unit, check.covered)?;
            match check.violations.len() {
                0 => writeln!(f, ")")?,
                n => writeln!(f, ", violations: {n})")?,
            }
            for violation in &check.violations {
                writeln!(f, "      - {}", violation.message)?;
            }
        }
        for skipped in &self.skipped {
            writeln!(f, "skip  {skipped}")?;
        }
        Ok(())
    }
}
