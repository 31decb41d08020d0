//! shop-provider's integration tests, as one binary: the emulator over real
//! HTTP on free loopback ports, as a shop would call it.

mod events;
mod faults;
mod intents;
mod refunds;
mod support;
mod three_ds;
mod webhooks;
