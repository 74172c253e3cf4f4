//! Integration tests: the real app on port 0 with a real SQLite file and real
//! WebSocket clients. One test binary; one module per surface.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod admin;
mod call_log;
mod click_to_call;
mod cluster;
mod connectors;
mod dispose;
mod helpers;
mod import;
mod openapi;
mod outbox;
mod popup;
mod route;
mod simulate;
mod socket;
mod sso;
