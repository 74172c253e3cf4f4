//! Telephony logs are written in batches off the request path: handlers queue rows,
//! one task inserts what arrives within [`LINGER`] of the first row (so rows are
//! visible within tens of milliseconds, and a thousand requests a second cost a few
//! dozen store writes rather than a thousand), and the queue is flushed on shutdown. Another task prunes them by age and count.

use crate::store::{DynStore, TelephonyLogRow};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const QUEUE: usize = 10_000;
const BATCH: usize = 500;
/// How long the writer gathers rows after the first before it writes them.
const LINGER: std::time::Duration = std::time::Duration::from_millis(20);

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
                let deadline = tokio::time::Instant::now() + LINGER;
                while buf.len() < BATCH {
                    let room = BATCH - buf.len();
                    tokio::select! {
                        n = rx.recv_many(&mut buf, room) => if n == 0 { break },
                        () = tokio::time::sleep_until(deadline) => break,
                        // written now; the next turn drains the queue and stops
                        () = flush.cancelled() => break,
                    }
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
