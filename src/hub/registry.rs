//! Which sockets each user has open on this node. Sends never await: a frame is
//! `try_send`-queued to every socket of the user, and a socket whose queue is full is
//! closed (1013) instead of slowing the others.

use super::protocol::close;
use super::session::{Outgoing, SessionHandle};
use crate::domain::ids::UserId;
use axum::extract::ws::Utf8Bytes;
use dashmap::DashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use tokio::sync::mpsc::error::TrySendError;

/// The registry of open sessions of this node.
#[derive(Debug, Default)]
pub struct Hub {
    sessions: DashMap<UserId, Vec<SessionHandle>>,
    total: AtomicUsize,
    next_id: AtomicU64,
}

impl Hub {
    /// An empty hub.
    pub fn new() -> Self {
        Self::default()
    }

    /// A fresh session id.
    pub fn next_session_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Registers a session of `user`; returns how many sessions the user now has.
    pub fn register(&self, user: UserId, handle: SessionHandle) -> usize {
        let mut entry = self.sessions.entry(user).or_default();
        entry.push(handle);
        self.total.fetch_add(1, Ordering::Relaxed);
        entry.len()
    }

    /// Removes a session.
    pub fn unregister(&self, user: UserId, id: u64) {
        let removed = self.sessions.remove_if_mut(&user, |_, v| {
            let before = v.len();
            v.retain(|h| h.id != id);
            if v.len() < before {
                self.total.fetch_sub(1, Ordering::Relaxed);
            }
            v.is_empty()
        });
        drop(removed);
    }

    /// Queues `frame` to every socket of `user`; returns how many accepted it.
    pub fn send(&self, user: UserId, frame: &Utf8Bytes) -> usize {
        self.send_timed(user, frame, 0)
    }

    /// [`Hub::send`] for a frame whose round trip is measured from `born`
    /// ([`super::session::clock_us`] of when its request was accepted).
    pub fn send_timed(&self, user: UserId, frame: &Utf8Bytes, born: u64) -> usize {
        let Some(sessions) = self.sessions.get(&user) else {
            return 0;
        };
        let mut sent = 0;
        for s in sessions.iter() {
            if s.closer.is_closed() {
                continue;
            }
            match s.tx.try_send(Outgoing {
                text: frame.clone(),
                born,
            }) {
                Ok(()) => sent += 1,
                Err(TrySendError::Full(_)) => s.closer.close(close::SLOW_CONSUMER),
                Err(TrySendError::Closed(_)) => {}
            }
        }
        sent
    }

    /// Queues `frame` to one session (a `result`, `error` or `pong`).
    pub fn send_one(handle: &SessionHandle, frame: Utf8Bytes) {
        if let Err(TrySendError::Full(_)) = handle.tx.try_send(frame.into()) {
            handle.closer.close(close::SLOW_CONSUMER);
        }
    }

    /// Closes every socket of `user` with `code`.
    pub fn close_user(&self, user: UserId, code: u16) {
        if let Some(sessions) = self.sessions.get(&user) {
            for s in sessions.iter() {
                s.closer.close(code);
            }
        }
    }

    /// Closes every socket with `code` (shutdown).
    pub fn close_all(&self, code: u16) {
        for entry in &self.sessions {
            for s in entry.value() {
                s.closer.close(code);
            }
        }
    }

    /// The users with a socket on this node.
    pub fn users(&self) -> Vec<UserId> {
        self.sessions.iter().map(|e| *e.key()).collect()
    }

    /// Open sessions on this node.
    pub fn count(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    /// Open sessions of `user` on this node.
    pub fn user_count(&self, user: UserId) -> usize {
        self.sessions.get(&user).map_or(0, |s| s.len())
    }
}
