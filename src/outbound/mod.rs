//! Calls to providers: one shared HTTP client ([`client`]); every request carries its
//! own timeout.

pub mod client;
pub mod outbox;
