//! utc-gateway: the Universal Telephony Connector.
//!
//! A provider request comes in at [`routes`], is turned into domain types by
//! [`providers`], is decided in [`service`], is stored by [`store`], and reaches agents
//! through [`hub`]. [`domain`] holds the pure types everything shares; [`app`] wires
//! it all into one node; [`config`] reads the settings.

pub mod app;
pub mod cli;
pub mod config;
pub mod domain;
pub mod error;
pub mod hub;
pub mod outbound;
pub mod providers;
pub mod routes;
pub mod service;
pub mod shutdown;
pub mod state;
pub mod store;
pub mod telemetry;
