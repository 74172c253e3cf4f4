//! WebSocket frame shapes (SPEC 3 and 9). Server frames are serialised once and the
//! same bytes are queued to every socket of the user.

use axum::extract::ws::Utf8Bytes;
use serde_json::{Value, json};

/// Close codes (DESIGN.md table).
pub mod close {
    /// No or bad `auth` frame.
    pub const UNAUTHENTICATED: u16 = 4401;
    /// Inactive user.
    pub const FORBIDDEN: u16 = 4403;
    /// Silent for `ws.idle_timeout_secs`.
    pub const IDLE: u16 = 4408;
    /// Over `ws.max_sockets_per_user`.
    pub const TOO_MANY: u16 = 4429;
    /// The queue of this socket is full.
    pub const SLOW_CONSUMER: u16 = 1013;
    /// The node is shutting down.
    pub const GOING_AWAY: u16 = 1001;
    /// Frame too large or not allowed.
    pub const PROTOCOL: u16 = 1008;
}

/// An event frame: `{"type":kind,"seq":seq, ..payload}` (the frame's own `type` and
/// `seq` win over keys of that name in `payload`). Written straight from `payload`,
/// without copying it into a new object first (a popup is a tree of some hundred
/// values).
pub fn event(kind: &str, seq: i64, payload: &Value) -> Utf8Bytes {
    struct Frame<'a> {
        kind: &'a str,
        seq: i64,
        payload: &'a Value,
    }
    impl serde::Serialize for Frame<'_> {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            use serde::ser::SerializeMap as _;
            let mut map = s.serialize_map(None)?;
            map.serialize_entry("type", self.kind)?;
            map.serialize_entry("seq", &self.seq)?;
            if let Value::Object(p) = self.payload {
                for (k, v) in p.iter().filter(|(k, _)| *k != "type" && *k != "seq") {
                    map.serialize_entry(k, v)?;
                }
            }
            map.end()
        }
    }
    let frame = Frame { kind, seq, payload };
    // a map of strings and JSON values always serialises
    serde_json::to_string(&frame).unwrap_or_default().into()
}

/// `{"type":"error","error":{"code","message"}}`
pub fn error(code: &str, message: &str) -> Utf8Bytes {
    json!({"type": "error", "error": {"code": code, "message": message}})
        .to_string()
        .into()
}

/// `{"type":"pong"}`
pub fn pong() -> Utf8Bytes {
    Utf8Bytes::from_static(r#"{"type":"pong"}"#)
}

/// A successful `result`.
pub fn result_ok(req: &str, data: Value) -> Utf8Bytes {
    json!({"type": "result", "req": req, "ok": true, "data": data})
        .to_string()
        .into()
}

/// A failed `result` carrying the API error object.
pub fn result_err(req: &str, error: Value) -> Utf8Bytes {
    json!({"type": "result", "req": req, "ok": false, "error": error})
        .to_string()
        .into()
}

/// A client frame after the first (`auth`) one.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientFrame {
    /// `{"type":"ping"}`
    Ping,
    /// `{"type":"ack","popup_id"}`
    Ack(Value),
    /// A request with a `req` (`dispose`, `click_to_call`): type, req, whole frame.
    Request {
        /// Frame type.
        kind: String,
        /// Client-chosen id echoed in `result`.
        req: String,
        /// The frame.
        frame: Value,
    },
}

/// Why a client frame was refused (answered with an `error` frame).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameError {
    /// snake_case code.
    pub code: &'static str,
    /// Human text.
    pub message: &'static str,
}

/// Reads a client frame.
///
/// # Errors
/// Not JSON, an unknown `type`, or a missing/too long `req`.
pub fn parse_client(text: &str) -> Result<ClientFrame, FrameError> {
    let v: Value = serde_json::from_str(text).map_err(|_| FrameError {
        code: "invalid_json",
        message: "the frame is not a JSON object",
    })?;
    let kind = v
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    match kind.as_str() {
        "ping" => Ok(ClientFrame::Ping),
        "ack" => Ok(ClientFrame::Ack(v)),
        "dispose" | "click_to_call" => match v.get("req").and_then(Value::as_str) {
            Some(req) if !req.is_empty() && req.chars().count() <= 64 => Ok(ClientFrame::Request {
                kind,
                req: req.to_owned(),
                frame: v,
            }),
            _ => Err(FrameError {
                code: "invalid_req",
                message: "req must be a string of 1 to 64 characters",
            }),
        },
        _ => Err(FrameError {
            code: "unknown_type",
            message: "unknown frame type",
        }),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn event_frames_carry_type_and_seq_first() {
        let f = event(
            "popup_closed",
            7,
            &json!({"popup_id": "p", "reason": "expired"}),
        );
        let v: Value = serde_json::from_str(f.as_str()).unwrap();
        assert_eq!(
            v,
            json!({"type": "popup_closed", "seq": 7, "popup_id": "p", "reason": "expired"})
        );
        assert!(f.as_str().starts_with(r#"{"type":"popup_closed","seq":7,"#));
        // the frame's own type and seq win
        let f = event("popup", 8, &json!({"type": "x", "seq": 1, "popup": {}}));
        assert_eq!(f.as_str(), r#"{"type":"popup","seq":8,"popup":{}}"#);
    }

    #[test]
    fn client_frames_need_a_known_type_and_a_req() {
        assert_eq!(parse_client(r#"{"type":"ping"}"#), Ok(ClientFrame::Ping));
        assert_eq!(parse_client("nope").unwrap_err().code, "invalid_json");
        assert_eq!(
            parse_client(r#"{"type":"dance"}"#).unwrap_err().code,
            "unknown_type"
        );
        assert_eq!(
            parse_client(r#"{"type":"dispose"}"#).unwrap_err().code,
            "invalid_req"
        );
        let long = "x".repeat(65);
        assert_eq!(
            parse_client(&format!(r#"{{"type":"dispose","req":"{long}"}}"#))
                .unwrap_err()
                .code,
            "invalid_req"
        );
    }
}
