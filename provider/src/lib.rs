//! A payment provider emulator: a Stripe-shaped JSON HTTP API that a shop
//! points at in development, and that tests, chaos runs and the storefront
//! use in place of a real provider.
//!
//! - [`domain`]: intents, refunds, events, the test cards and the state
//!   machine (pure).
//! - `journal` and `book`: the append-only journal and the state it
//!   rebuilds; a restart loses nothing.
//! - [`config`]: `PROVIDER_*` settings.
//!
//! See README.md for the API, the test cards, webhooks and fault knobs.

// The engine that drives them comes with the HTTP API.
#[allow(dead_code)]
mod book;
pub mod config;
pub mod domain;
#[allow(dead_code)]
mod journal;

pub use config::Config;
pub use journal::JournalError;
