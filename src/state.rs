//! `AppState`: the Arc'd handles every route and service works with.

use crate::config::Settings;
use crate::hub::{Bus, Hub};
use crate::service::auth::Keys;
use crate::service::ratelimit::RateLimiter;
use crate::service::tlog::TelephonyLog;
use crate::shutdown::Shutdown;
use crate::store::DynStore;
use std::sync::Arc;

/// Shared state of one node.
#[derive(Clone)]
pub struct AppState {
    /// The database.
    pub store: DynStore,
    /// Open sockets of this node.
    pub hub: Arc<Hub>,
    /// Delivery to a user's sockets on every node (Redis) or on this one.
    pub bus: Arc<Bus>,
    /// Settings.
    pub settings: Arc<Settings>,
    /// Admin token and JWT keys.
    pub keys: Arc<Keys>,
    /// Telephony-log writer.
    pub tlog: TelephonyLog,
    /// Provider request rate per connector.
    pub limiter: Arc<RateLimiter>,
    /// Prometheus renderer (`None` when another recorder owns the process).
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    /// The shared HTTP client for provider calls.
    pub http: reqwest::Client,
    /// Wakes the outbox worker when an item was queued.
    pub outbox_wake: Arc<tokio::sync::Notify>,
    /// Stop signal and task tracker.
    pub shutdown: Shutdown,
}
