//! One socket's outgoing side: a bounded queue drained by one writer task, a heartbeat,
//! and a [`Closer`] any task can use to close the socket with a code. A full queue
//! closes that socket (1013); nobody ever waits on a slow socket.

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::SinkExt;
use futures_util::stream::SplitSink;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Closes one socket, remembering the first close code asked for.
#[derive(Debug, Default)]
pub struct Closer {
    token: CancellationToken,
    code: AtomicU16,
}

impl Closer {
    /// Asks the socket to close with `code` (0: no close frame). The first code wins.
    pub fn close(&self, code: u16) {
        let _ = self
            .code
            .compare_exchange(0, code, Ordering::AcqRel, Ordering::Acquire);
        self.token.cancel();
    }

    /// The close code asked for, if any.
    pub fn code(&self) -> u16 {
        self.code.load(Ordering::Acquire)
    }

    /// Resolves when a close was asked for.
    pub async fn closed(&self) {
        self.token.cancelled().await;
    }

    /// Whether a close was asked for.
    pub fn is_closed(&self) -> bool {
        self.token.is_cancelled()
    }
}

/// A frame queued to a socket. `born` is when the provider request that caused it was
/// accepted ([`clock_us`]; 0 for frames nobody times): the writer records the popup
/// round trip (accepted -> written to the socket) from it.
#[derive(Debug)]
pub struct Outgoing {
    /// The frame.
    pub text: Utf8Bytes,
    /// Accepted at, in µs on the process clock; 0: not timed.
    pub born: u64,
}

impl From<Utf8Bytes> for Outgoing {
    fn from(text: Utf8Bytes) -> Self {
        Self { text, born: 0 }
    }
}

/// `at` in µs since the process clock's start (never 0), for [`Outgoing::born`].
pub fn clock_us(at: Instant) -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(|| Instant::now() - Duration::from_secs(1));
    u64::try_from(at.saturating_duration_since(epoch).as_micros()).unwrap_or(u64::MAX)
}

/// The hub's handle on one socket.
#[derive(Clone, Debug)]
pub struct SessionHandle {
    /// Unique per node.
    pub id: u64,
    /// The bounded queue to the writer.
    pub tx: mpsc::Sender<Outgoing>,
    /// Closes the socket.
    pub closer: Arc<Closer>,
}

fn reason(code: u16) -> &'static str {
    use super::protocol::close;
    match code {
        close::UNAUTHENTICATED => "unauthenticated",
        close::FORBIDDEN => "forbidden",
        close::IDLE => "idle timeout",
        close::TOO_MANY => "too many sockets",
        close::SLOW_CONSUMER => "slow consumer",
        close::GOING_AWAY => "going away",
        close::PROTOCOL => "protocol violation",
        _ => "",
    }
}

/// Sends a Close frame with `code`, trying for at most one second.
pub async fn send_close(sink: &mut SplitSink<WebSocket, Message>, code: u16) {
    let frame = CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason(code)),
    };
    let _ = tokio::time::timeout(
        Duration::from_secs(1),
        sink.send(Message::Close(Some(frame))),
    )
    .await;
}

/// Drains `rx` into the socket and pings every `heartbeat` until the closer fires or
/// the socket fails; then sends the close code (if any, for at most 1 s) and returns,
/// dropping the connection.
pub async fn run_writer(
    mut sink: SplitSink<WebSocket, Message>,
    mut rx: mpsc::Receiver<Outgoing>,
    closer: Arc<Closer>,
    heartbeat: Duration,
) {
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + heartbeat, heartbeat);
    loop {
        let (msg, born) = tokio::select! {
            biased;
            () = closer.closed() => break,
            m = rx.recv() => match m {
                Some(out) => (Message::Text(out.text), out.born),
                None => break,
            },
            _ = ping.tick() => (Message::Ping(axum::body::Bytes::new()), 0),
        };
        tokio::select! {
            r = sink.send(msg) => if r.is_err() { closer.close(0); break },
            () = closer.closed() => break,
        }
        if born != 0 {
            let micros = clock_us(Instant::now()).saturating_sub(born);
            metrics::histogram!("utc_popup_round_trip_seconds").record(micros as f64 / 1e6);
        }
    }
    let code = closer.code();
    if code != 0 {
        send_close(&mut sink, code).await;
    }
}
