//! Logging through `tracing`: `log.level` is an EnvFilter directive (`RUST_LOG` is not
//! read), `log.format` is `pretty` or `json`; the sink is passed in.

use crate::config::LogSettings;
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
