//! Telephony logs are written in batches off the request path: handlers queue rows,
//! one task inserts whatever has arrived (so rows are visible within milliseconds),
//! and the queue is flushed on shutdown. Another task prunes them by age and count.

use crate::store::{DynStore, TelephonyLogRow};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const QUEUE: usize = 10_000;
const BATCH: usize = 500;

/// Handle to queue telephony-log rows.
#[derive(Clone, Debug)]
pub struct TelephonyLog {
    tx: mpsc::Sender<TelephonyLogRow>,
}

impl TelephonyLog {
    /// Starts the writer; it stops after `flush` is cancelled and the queue is drained.
    pub fn spawn(store: DynStore, flush: CancellationToken) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, mut rx) = mpsc::channel::<TelephonyLogRow>(QUEUE);
        let task = tokio::spawn(async move {
            let mut buf = Vec::with_capacity(BATCH);
            loop {
                let n = tokio::select! {
                    n = rx.recv_many(&mut buf, BATCH) => n,
                    () = flush.cancelled() => {
                        while let Ok(row) = rx.try_recv() {
                            buf.push(row);
                        }
                        write(&store, &mut buf).await;
                        return;
                    }
                };
                if n == 0 {
                    return;
                }
                write(&store, &mut buf).await;
            }
        });
        (Self { tx }, task)
    }

    /// Queues a row; when the queue is full the row is dropped with a warning.
    pub fn record(&self, row: TelephonyLogRow) {
        if self.tx.try_send(row).is_err() {
            metrics::counter!("utc_telephony_log_dropped_total").increment(1);
            tracing::warn!("telephony-log queue full; a row was dropped");
        }
    }
}

async fn write(store: &DynStore, buf: &mut Vec<TelephonyLogRow>) {
    if buf.is_empty() {
        return;
    }
    if let Err(e) = store.insert_telephony_logs(buf).await {
        tracing::error!(error = ?e, rows = buf.len(), "writing telephony logs failed");
    }
    buf.clear();
}

/// Deletes rows past `telephony_log.retention_days` and beyond `telephony_log.max_rows`.
///
/// # Errors
/// Store failures.
pub async fn prune(state: &crate::state::AppState) -> Result<u64, crate::store::StoreError> {
    let days =
        i64::try_from(state.settings.telephony_log.retention_days).unwrap_or(i64::MAX / 86_400_000);
    let before = crate::domain::time::Timestamp::now().plus_secs(-days.saturating_mul(86_400));
    state
        .store
        .prune_telephony_logs(before, state.settings.telephony_log.max_rows)
        .await
}

/// Prunes once a minute until shutdown.
pub async fn run_pruning(state: crate::state::AppState) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
    loop {
        tokio::select! {
            () = state.shutdown.token.cancelled() => return,
            _ = tick.tick() => {}
        }
        match prune(&state).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(rows = n, "pruned telephony logs"),
            Err(e) => tracing::warn!(error = ?e, "pruning telephony logs failed"),
        }
    }
}
