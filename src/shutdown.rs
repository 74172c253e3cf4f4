//! Shutdown is ours: one [`CancellationToken`] says "stop", one [`TaskTracker`] holds
//! every spawned task so the process can wait for them with a deadline.

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The node's stop signal and task tracker.
#[derive(Clone, Debug, Default)]
pub struct Shutdown {
    /// Cancelled on SIGTERM/SIGINT (or by the owner of the app).
    pub token: CancellationToken,
    /// Every background task.
    pub tracker: TaskTracker,
}

impl Shutdown {
    /// A fresh, running state.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the node is draining (no new sockets, `/readyz` 503).
    pub fn is_draining(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Spawns a tracked task.
    pub fn spawn<F>(&self, fut: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tracker.spawn(fut)
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
