//! Logging through `tracing`: `log.level` is an EnvFilter directive (`RUST_LOG` is not
//! read), `log.format` is `pretty` or `json`; the sink is passed in. And Prometheus
//! metrics (SPEC 7 `GET /metrics`): one recorder per process (it is global), with
//! explicit histogram buckets; labels never carry ids, numbers or keys.

use crate::config::LogSettings;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// Installs the global subscriber writing to `sink`.
///
/// # Errors
/// An invalid `log.level` directive, or a subscriber already installed.
pub fn init<W>(log: &LogSettings, sink: W) -> anyhow::Result<()>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_new(&log.level).map_err(|e| anyhow::anyhow!("log.level: {e}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(sink);
    let result = if log.format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    result.map_err(|e| anyhow::anyhow!("installing the log subscriber: {e}"))
}

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Latency buckets in seconds: popups are expected in milliseconds.
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Installs the process-wide recorder (once) and returns its handle, or `None` when
/// another recorder was installed first.
pub fn install_metrics() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)
                .ok()?
                .build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            describe();
            Some(handle)
        })
        .clone()
}

fn describe() {
    metrics::describe_counter!(
        "utc_http_requests_total",
        "HTTP requests by route template and status"
    );
    metrics::describe_histogram!(
        "utc_http_request_duration_seconds",
        "HTTP request duration by route template"
    );
    metrics::describe_counter!(
        "utc_provider_requests_total",
        "Provider requests by endpoint and outcome"
    );
    metrics::describe_counter!("utc_popups_total", "Agent popups by result");
    metrics::describe_counter!(
        "utc_popup_frames_total",
        "Popup frames queued to agent sockets"
    );
    metrics::describe_histogram!(
        "utc_popup_round_trip_seconds",
        "Popup round trip: provider request accepted -> frame written to the agent's socket"
    );
    metrics::describe_counter!("utc_dispositions_total", "Dispositions by result");
    metrics::describe_gauge!("utc_ws_sockets", "Open agent sockets on this node");
    metrics::describe_counter!(
        "utc_ws_closed_total",
        "Agent sockets closed by the server, by close code"
    );
}
