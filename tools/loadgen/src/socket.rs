//! One authenticated agent socket. [`AgentSocket::connect`] opens `/ws`, sends the
//! `auth` frame and waits for `ready`; then a task of its own reads the socket and
//! timestamps every frame the moment it is read (before parsing it), so a waiting
//! sender never delays the measurement. The task also sends `{"type":"ping"}` when
//! asked and every 20 s on its own, so long runs are not closed as idle.

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// Application-level keepalive period (the gateway closes sockets silent for 60 s).
const KEEPALIVE: Duration = Duration::from_secs(20);
/// Read buffer per socket: popups are a few KiB, and thousands of idle sockets should
/// not cost the load generator 128 KiB each.
const READ_BUFFER: usize = 16 * 1024;

const PING: &str = r#"{"type":"ping"}"#;

/// Something the socket received (or what happened to it), with the time it was read.
#[derive(Debug, Clone)]
pub enum Event {
    /// A `popup` frame.
    Popup {
        /// `popup.call.call_session_id`.
        call_session_id: String,
        /// `popup.id`.
        popup_id: String,
        /// The frame's length in bytes.
        bytes: usize,
        /// When the frame was read.
        at: Instant,
    },
    /// A `pong` frame.
    Pong {
        /// When the frame was read.
        at: Instant,
    },
    /// Any other text frame (its `type`).
    Other {
        /// The frame's `type` (or `?`).
        kind: String,
    },
    /// The socket closed (the close code, if the server sent one) or failed.
    Closed {
        /// The close code.
        code: Option<u16>,
        /// The close reason or the error.
        reason: String,
    },
}

/// Requests to the socket task.
#[derive(Debug)]
enum Cmd {
    Ping,
}

/// An open, authenticated agent socket read by its own task.
#[derive(Debug)]
pub struct AgentSocket {
    cmd: mpsc::UnboundedSender<Cmd>,
    /// Everything the socket received since `ready`, in order.
    pub events: mpsc::UnboundedReceiver<Event>,
    task: JoinHandle<()>,
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

impl AgentSocket {
    /// Opens `ws_url`, authenticates with `token` and waits for `ready`, all within
    /// `timeout`.
    ///
    /// # Errors
    /// The connection or upgrade failed, the server closed the socket, or no `ready`
    /// came in time.
    pub async fn connect(ws_url: &str, token: &str, timeout: Duration) -> anyhow::Result<Self> {
        let ws = tokio::time::timeout(timeout, open(ws_url, token))
            .await
            .with_context(|| format!("no `ready` within {timeout:?}"))??;
        let (cmd, cmd_rx) = mpsc::unbounded_channel();
        let (ev_tx, events) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(ws, cmd_rx, ev_tx));
        Ok(Self { cmd, events, task })
    }

    /// Sends `{"type":"ping"}` and waits up to `timeout` for the `pong`; returns the
    /// wait. Other frames read meanwhile are skipped.
    ///
    /// # Errors
    /// The socket closed or no pong came in time.
    pub async fn ping(&mut self, timeout: Duration) -> anyhow::Result<Duration> {
        let sent = Instant::now();
        self.cmd
            .send(Cmd::Ping)
            .map_err(|_| anyhow::anyhow!("the socket task has ended"))?;
        let deadline = tokio::time::Instant::from_std(sent + timeout);
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Err(_) => bail!("no pong within {timeout:?}"),
                Ok(None) => bail!("the socket task has ended"),
                Ok(Some(Event::Pong { at })) => return Ok(at.saturating_duration_since(sent)),
                Ok(Some(Event::Closed { code, reason })) => {
                    bail!("socket closed (code {code:?}: {reason})")
                }
                Ok(Some(_)) => {}
            }
        }
    }

    /// Closes the socket politely (a Close frame) and waits up to a second for its task.
    pub async fn close(self) {
        let Self { cmd, events, task } = self;
        drop(cmd);
        drop(events);
        let _ = tokio::time::timeout(Duration::from_secs(1), task).await;
    }
}

async fn open(ws_url: &str, token: &str) -> anyhow::Result<Ws> {
    let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER);
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(ws_url, Some(config), true)
        .await
        .with_context(|| format!("opening {ws_url}"))?;
    let auth = serde_json::json!({"type": "auth", "token": token, "since": null}).to_string();
    ws.send(Message::text(auth))
        .await
        .context("sending the auth frame")?;
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => {
                let v: Value =
                    serde_json::from_str(t.as_str()).context("a frame that is not JSON")?;
                match v.get("type").and_then(Value::as_str) {
                    Some("ready") => return Ok(ws),
                    other => bail!("expected `ready`, got {:?}: {}", other, t.as_str()),
                }
            }
            Some(Ok(Message::Close(f))) => {
                let (code, reason) = f.map_or((None, String::new()), |f| {
                    (Some(u16::from(f.code)), f.reason.to_string())
                });
                bail!("the gateway closed the socket before `ready` (code {code:?}: {reason})");
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(anyhow::Error::new(e).context("reading `ready`")),
            None => bail!("the socket ended before `ready`"),
        }
    }
}

/// Parses one text frame into an [`Event`] stamped `at`.
fn parse(text: &str, at: Instant) -> Event {
    let Ok(v) = serde_json::from_str::<Value>(text) else {
        return Event::Other { kind: "?".into() };
    };
    let kind = v.get("type").and_then(Value::as_str).unwrap_or("?");
    match kind {
        "popup" => {
            let s = |p: &str| {
                v.pointer(p)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned()
            };
            Event::Popup {
                call_session_id: s("/popup/call/call_session_id"),
                popup_id: s("/popup/id"),
                bytes: text.len(),
                at,
            }
        }
        "pong" => Event::Pong { at },
        other => Event::Other {
            kind: other.to_owned(),
        },
    }
}

async fn run(ws: Ws, mut cmd: mpsc::UnboundedReceiver<Cmd>, events: mpsc::UnboundedSender<Event>) {
    let (mut sink, mut stream) = ws.split();
    let mut keepalive =
        tokio::time::interval_at(tokio::time::Instant::now() + KEEPALIVE, KEEPALIVE);
    loop {
        tokio::select! {
            msg = stream.next() => {
                let at = Instant::now();
                match msg {
                    Some(Ok(Message::Text(t))) => {
                        let _ = events.send(parse(t.as_str(), at));
                    }
                    Some(Ok(Message::Close(f))) => {
                        let (code, reason) = f.map_or((None, String::new()), |f| (Some(u16::from(f.code)), f.reason.to_string()));
                        let _ = events.send(Event::Closed { code, reason });
                        return;
                    }
                    // Pings are answered by the library; binary frames are not expected.
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        let _ = events.send(Event::Closed { code: None, reason: e.to_string() });
                        return;
                    }
                    None => {
                        let _ = events.send(Event::Closed { code: None, reason: "connection ended".into() });
                        return;
                    }
                }
            }
            c = cmd.recv() => match c {
                Some(Cmd::Ping) => {
                    if let Err(e) = sink.send(Message::text(PING)).await {
                        let _ = events.send(Event::Closed { code: None, reason: e.to_string() });
                        return;
                    }
                }
                None => {
                    let _ = sink.close().await;
                    // Drain until the server's Close answer (or give up after a second).
                    let _ = tokio::time::timeout(Duration::from_secs(1), async {
                        while let Some(Ok(_)) = stream.next().await {}
                    })
                    .await;
                    return;
                }
            },
            _ = keepalive.tick() => {
                if let Err(e) = sink.send(Message::text(PING)).await {
                    let _ = events.send(Event::Closed { code: None, reason: e.to_string() });
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn popup_frames_yield_their_call_session_and_id() {
        let at = Instant::now();
        let f = r#"{"type":"popup","seq":3,"popup":{"id":"p1","call":{"call_session_id":"c9"}}}"#;
        match parse(f, at) {
            Event::Popup {
                call_session_id,
                popup_id,
                bytes,
                ..
            } => {
                assert_eq!(bytes, f.len());
                assert_eq!(call_session_id, "c9");
                assert_eq!(popup_id, "p1");
            }
            e => panic!("unexpected {e:?}"),
        }
        assert!(matches!(
            parse(r#"{"type":"pong"}"#, at),
            Event::Pong { .. }
        ));
        assert!(
            matches!(parse(r#"{"type":"popup_update"}"#, at), Event::Other { kind } if kind == "popup_update")
        );
        assert!(matches!(parse("nope", at), Event::Other { .. }));
    }
}
