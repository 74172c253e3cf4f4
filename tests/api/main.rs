//! Integration tests: the real app on port 0 with a real store (a SQLite file, or a
//! fresh PostgreSQL database with `UTC_TEST_STORE=postgres`) and real WebSocket
//! clients. One test binary; one module per surface.

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
mod shared_store;
mod simulate;
mod socket;
mod sso;
