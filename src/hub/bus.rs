//! Delivery to a user's sockets on every node (SPEC 3, 7): [`Bus`] sends to this node's
//! sockets through the [`Hub`] and, when `cluster.redis_url` is set, publishes the same
//! frame once on one Redis channel that every node subscribes to, and keeps presence
//! (which users have sockets on which node) in Redis keys with TTLs.
//!
//! Redis only fans out and counts: popups, `seq` and replay live in the shared store.
//! Plain pub/sub loses what is published while a node is cut off, which is why a popup
//! nobody could be told about stays `queued` in the store and each node re-sends the
//! queued popups of its users when Redis comes back ([`BusSignal::Resumed`]).
//!
//! Keys (all under `cluster.key_prefix`):
//! - `bus` — the channel; a message is `f\t<node>\t<user>\t<popup id|->\t<frame>` (a
//!   frame for the user's sockets), `c\t<node>\t<user>\t<close code>`, or `n\t<node>`
//!   (a node that just joined, so the others count its sockets at once);
//! - `nodes` — the set of node ids; `alive:<node>` — a node's heartbeat (TTL);
//! - `presence:<user>:<node>` — how many sockets the user has on that node (TTL).
//!
//! Every node refreshes its keys every `cluster.presence_ttl_secs`/3, so the sessions
//! of a node that crashed vanish within the TTL. While Redis is unreachable the hot
//! path does not touch it: frames go to local sockets only, remote counts are 0 and
//! `/readyz` says `degraded`; a health check every second notices its return.

use super::Hub;
use crate::domain::ids::{PopupId, UserId};
use axum::extract::ws::Utf8Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{IntoConnectionInfo, Msg, ProtocolVersion, PushInfo, PushKind};
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How often the health of the Redis connection is checked.
const HEALTH_EVERY: Duration = Duration::from_secs(1);
/// How long one Redis command may take before the node treats Redis as down.
const REDIS_TIMEOUT: Duration = Duration::from_millis(1000);

/// What `/readyz` reports for Redis.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RedisStatus {
    /// No `cluster.redis_url`.
    Off,
    /// Connected.
    Ok,
    /// Configured but unreachable.
    Down,
}

impl RedisStatus {
    /// `off`, `ok` or `down`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Ok => "ok",
            Self::Down => "down",
        }
    }
}

/// What the bus asks the services to do (it holds no business rules itself).
#[derive(Debug, PartialEq, Eq)]
pub enum BusSignal {
    /// Redis is reachable again: re-send the queued popups of this node's users.
    Resumed,
    /// A popup published by another node was written to a socket here: it is delivered.
    RemoteDelivered(PopupId),
}

/// Cluster settings the bus needs, resolved.
#[derive(Clone, Debug)]
pub struct BusConfig {
    /// `cluster.redis_url`.
    pub redis_url: String,
    /// `cluster.node_id`.
    pub node_id: String,
    /// `cluster.key_prefix`.
    pub key_prefix: String,
    /// `cluster.presence_ttl_secs`.
    pub presence_ttl: Duration,
}

/// Fan-out of frames to every node, or to this one alone.
pub struct Bus {
    hub: Arc<Hub>,
    redis: Option<RedisBus>,
}

struct RedisBus {
    conn: ConnectionManager,
    config: BusConfig,
    channel: String,
    up: Arc<AtomicBool>,
    /// The other live nodes, refreshed with presence and on their announcements.
    peers: Peers,
    /// Users whose presence key must be rewritten.
    dirty: mpsc::UnboundedSender<UserId>,
    tasks: Mutex<Option<Receivers>>,
}

/// The other live nodes: read on every send, written by the refresh and by the push
/// handler when a node announces itself.
type Peers = Arc<RwLock<Arc<[String]>>>;

struct Receivers {
    dirty: mpsc::UnboundedReceiver<UserId>,
    signals: mpsc::UnboundedSender<BusSignal>,
}

impl Bus {
    /// A bus that reaches this node's sockets only.
    pub fn local(hub: Arc<Hub>) -> Self {
        Self { hub, redis: None }
    }

    /// A bus over Redis. It connects lazily: a node whose Redis is down at start still
    /// starts, degraded. The returned receiver carries [`BusSignal`]s for the services.
    ///
    /// # Errors
    /// An unreadable `redis_url`.
    pub fn redis(
        hub: Arc<Hub>,
        config: BusConfig,
    ) -> anyhow::Result<(Self, mpsc::UnboundedReceiver<BusSignal>)> {
        let info = config.redis_url.as_str().into_connection_info()?;
        let settings = info
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        let client = redis::Client::open(info.set_redis_settings(settings))?;
        let up = Arc::new(AtomicBool::new(false));
        let peers: Peers = Arc::new(RwLock::new(Arc::from(Vec::new())));
        let (signals, signal_rx) = mpsc::unbounded_channel();
        let channel = format!("{}bus", config.key_prefix);
        let on_push = PushHandler {
            hub: hub.clone(),
            node: config.node_id.clone(),
            channel: channel.clone(),
            up: up.clone(),
            signals: signals.clone(),
            peers: peers.clone(),
        };
        let manager_config = ConnectionManagerConfig::new()
            .set_push_sender(move |info: PushInfo| {
                on_push.handle(info);
                Ok::<(), ()>(())
            })
            .set_automatic_resubscription()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(REDIS_TIMEOUT))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client, manager_config)?;
        let (dirty, dirty_rx) = mpsc::unbounded_channel();
        let bus = Self {
            hub,
            redis: Some(RedisBus {
                conn,
                config,
                channel,
                up,
                peers,
                dirty,
                tasks: Mutex::new(Some(Receivers {
                    dirty: dirty_rx,
                    signals,
                })),
            }),
        };
        Ok((bus, signal_rx))
    }

    /// This node's sockets.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// Redis's state for `/readyz`.
    pub fn redis_status(&self) -> RedisStatus {
        match &self.redis {
            None => RedisStatus::Off,
            Some(r) if r.up.load(Ordering::Acquire) => RedisStatus::Ok,
            Some(_) => RedisStatus::Down,
        }
    }

    /// Sends `frame` to every socket of `user` on every node; returns the sockets it was
    /// sent to: this node's that accepted it, plus those presence lists on other nodes
    /// (SPEC 2.1 `Delivered`). `born` times the popup round trip on this node; `popup`
    /// names the popup a frame carries, so the node that writes it marks it delivered.
    pub async fn send(
        &self,
        user: UserId,
        frame: &Utf8Bytes,
        born: u64,
        popup: Option<PopupId>,
    ) -> usize {
        let local = self.hub.send_timed(user, frame, born);
        let Some(r) = self.redis.as_ref().filter(|r| r.is_up()) else {
            return local;
        };
        let message = format!(
            "f\t{}\t{user}\t{}\t{}",
            r.config.node_id,
            popup.map_or_else(|| "-".to_owned(), |p| p.to_string()),
            frame.as_str()
        );
        let mut pipe = redis::pipe();
        pipe.publish(&r.channel, message).ignore();
        let keys = r.presence_keys(user);
        if !keys.is_empty() {
            pipe.mget(&keys);
        }
        local + r.remote_count(pipe, keys.is_empty()).await
    }

    /// How many sockets `user` has open on every node.
    pub async fn sockets_of(&self, user: UserId) -> usize {
        let local = self.hub.user_count(user);
        let Some(r) = self.redis.as_ref().filter(|r| r.is_up()) else {
            return local;
        };
        let keys = r.presence_keys(user);
        if keys.is_empty() {
            return local;
        }
        let mut pipe = redis::pipe();
        pipe.mget(&keys);
        local + r.remote_count(pipe, false).await
    }

    /// Closes every socket of `user` on every node with `code` (a deactivated user).
    pub async fn close_user(&self, user: UserId, code: u16) {
        self.hub.close_user(user, code);
        if let Some(r) = self.redis.as_ref().filter(|r| r.is_up()) {
            let message = format!("c\t{}\t{user}\t{code}", r.config.node_id);
            let mut conn = r.conn.clone();
            let sent: redis::RedisResult<()> = redis::cmd("PUBLISH")
                .arg(&r.channel)
                .arg(message)
                .query_async(&mut conn)
                .await;
            r.check(sent);
        }
    }

    /// Tells the bus that `user`'s sockets on this node changed (opened or closed), so
    /// presence is rewritten.
    pub fn presence_changed(&self, user: UserId) {
        if let Some(r) = &self.redis {
            let _ = r.dirty.send(user);
        }
    }

    /// Runs the bus's upkeep until `stop`: health checks (resubscribing and signalling
    /// [`BusSignal::Resumed`] when Redis returns), presence refreshes every TTL/3, and
    /// presence rewrites of changed users. On stop it removes this node's presence.
    /// Returns at once for a local bus or when called a second time.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let Some(r) = &self.redis else { return };
        let Some(Receivers { mut dirty, signals }) = r.tasks.lock().ok().and_then(|mut t| t.take())
        else {
            return;
        };
        let mut health = tokio::time::interval(HEALTH_EVERY);
        health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let every = (r.config.presence_ttl / 3).max(Duration::from_millis(100));
        let mut refresh = tokio::time::interval(every);
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = health.tick() => {
                    let was_up = r.is_up();
                    if r.ping().await && !was_up {
                        if r.resume(&self.hub).await {
                            tracing::info!("redis reachable: cluster delivery resumed");
                            let _ = signals.send(BusSignal::Resumed);
                        }
                    } else if was_up && !r.is_up() {
                        tracing::warn!("redis unreachable: delivering to local sockets only");
                    }
                }
                _ = refresh.tick() => {
                    if r.is_up() {
                        r.refresh(&self.hub).await;
                    }
                }
                Some(user) = dirty.recv() => {
                    let mut users = HashSet::from([user]);
                    while let Ok(u) = dirty.try_recv() {
                        users.insert(u);
                    }
                    if r.is_up() {
                        r.write_presence(&self.hub, users.into_iter()).await;
                    }
                }
            }
        }
        r.leave(&self.hub).await;
    }
}

impl RedisBus {
    fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// Records the outcome of a command: a failure marks Redis down until the next
    /// health check succeeds.
    fn check<T>(&self, r: redis::RedisResult<T>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                if self.up.swap(false, Ordering::AcqRel) {
                    tracing::warn!(error = %e, "redis command failed: delivering to local sockets only");
                }
                None
            }
        }
    }

    fn key(&self, rest: std::fmt::Arguments<'_>) -> String {
        format!("{}{rest}", self.config.key_prefix)
    }

    fn presence_key(&self, user: UserId, node: &str) -> String {
        self.key(format_args!("presence:{user}:{node}"))
    }

    fn ttl_ms(&self) -> u64 {
        u64::try_from(self.config.presence_ttl.as_millis()).unwrap_or(u64::MAX)
    }

    fn presence_keys(&self, user: UserId) -> Vec<String> {
        let peers = self
            .peers
            .read()
            .map(|p| p.clone())
            .unwrap_or_else(|p| p.into_inner().clone());
        peers.iter().map(|n| self.presence_key(user, n)).collect()
    }

    /// Runs `pipe` (whose last command, unless `none`, is an MGET of presence keys) and
    /// sums the counts it read.
    async fn remote_count(&self, pipe: redis::Pipeline, none: bool) -> usize {
        let mut conn = self.conn.clone();
        if none {
            let r: redis::RedisResult<()> = pipe.query_async(&mut conn).await;
            self.check(r);
            return 0;
        }
        let r: redis::RedisResult<(Vec<Option<u64>>,)> = pipe.query_async(&mut conn).await;
        self.check(r).map_or(0, |(counts,)| {
            counts
                .into_iter()
                .flatten()
                .map(|c| usize::try_from(c).unwrap_or(0))
                .sum()
        })
    }

    async fn ping(&self) -> bool {
        let mut conn = self.conn.clone();
        let r: redis::RedisResult<String> =
            tokio::time::timeout(REDIS_TIMEOUT, redis::cmd("PING").query_async(&mut conn))
                .await
                .unwrap_or_else(|_| Err((redis::ErrorKind::Io, "PING timed out").into()));
        if r.is_err() {
            self.check(r);
            return false;
        }
        true
    }

    /// Subscribes and rewrites this node's presence; marks Redis up when both worked.
    async fn resume(&self, hub: &Hub) -> bool {
        let mut conn = self.conn.clone();
        let subscribed = conn.subscribe(&self.channel).await;
        if subscribed.is_err() {
            self.check(subscribed);
            return false;
        }
        self.up.store(true, Ordering::Release);
        self.refresh(hub).await;
        // the other nodes count this node's sockets from now on, not from their next
        // refresh (up to a third of the TTL away)
        let mut conn = self.conn.clone();
        let announced: redis::RedisResult<()> = redis::cmd("PUBLISH")
            .arg(&self.channel)
            .arg(format!("n\t{}", self.config.node_id))
            .query_async(&mut conn)
            .await;
        self.check(announced);
        self.is_up()
    }

    /// Rewrites the node's heartbeat and the presence of every local user, and reads
    /// which other nodes are alive.
    async fn refresh(&self, hub: &Hub) {
        let node = &self.config.node_id;
        let nodes_key = self.key(format_args!("nodes"));
        let mut pipe = redis::pipe();
        pipe.sadd(&nodes_key, node)
            .ignore()
            .cmd("SET")
            .arg(self.key(format_args!("alive:{node}")))
            .arg(1)
            .arg("PX")
            .arg(self.ttl_ms())
            .ignore()
            .smembers(&nodes_key);
        let mut conn = self.conn.clone();
        let members: Option<(Vec<String>,)> = self.check(pipe.query_async(&mut conn).await);
        let Some((members,)) = members else { return };
        let others: Vec<String> = members.into_iter().filter(|n| n != node).collect();
        let alive = if others.is_empty() {
            Vec::new()
        } else {
            let keys: Vec<String> = others
                .iter()
                .map(|n| self.key(format_args!("alive:{n}")))
                .collect();
            let mut pipe = redis::pipe();
            pipe.mget(&keys);
            let flags: Option<(Vec<Option<String>>,)> =
                self.check(pipe.query_async(&mut conn).await);
            let Some((flags,)) = flags else { return };
            let (alive, dead): (Vec<_>, Vec<_>) = others
                .into_iter()
                .zip(flags)
                .partition(|(_, f)| f.is_some());
            if !dead.is_empty() {
                let dead: Vec<String> = dead.into_iter().map(|(n, _)| n).collect();
                let r: redis::RedisResult<()> = redis::cmd("SREM")
                    .arg(&nodes_key)
                    .arg(&dead)
                    .query_async(&mut conn)
                    .await;
                self.check(r);
            }
            alive.into_iter().map(|(n, _)| n).collect()
        };
        if let Ok(mut p) = self.peers.write() {
            *p = Arc::from(alive);
        }
        self.write_presence(hub, hub.users().into_iter()).await;
    }

    /// Writes the current local socket count of each user (deleting the key at 0), in
    /// pipelines of at most 1,000 users.
    async fn write_presence(&self, hub: &Hub, users: impl Iterator<Item = UserId>) {
        let users: Vec<UserId> = users.collect();
        let mut conn = self.conn.clone();
        for chunk in users.chunks(1000) {
            let mut pipe = redis::pipe();
            for &user in chunk {
                let key = self.presence_key(user, &self.config.node_id);
                match hub.user_count(user) {
                    0 => pipe.del(key).ignore(),
                    n => pipe
                        .cmd("SET")
                        .arg(key)
                        .arg(n)
                        .arg("PX")
                        .arg(self.ttl_ms())
                        .ignore(),
                };
            }
            let r: redis::RedisResult<()> = pipe.query_async(&mut conn).await;
            if self.check(r).is_none() {
                return;
            }
        }
    }

    /// Removes this node's heartbeat and presence (graceful stop).
    async fn leave(&self, hub: &Hub) {
        if !self.is_up() {
            return;
        }
        let node = &self.config.node_id;
        let mut pipe = redis::pipe();
        pipe.srem(self.key(format_args!("nodes")), node)
            .ignore()
            .del(self.key(format_args!("alive:{node}")))
            .ignore();
        for user in hub.users() {
            pipe.del(self.presence_key(user, node)).ignore();
        }
        let mut conn = self.conn.clone();
        let r: redis::RedisResult<()> = pipe.query_async(&mut conn).await;
        self.check(r);
    }
}

/// Handles what Redis pushes: messages of the bus channel, and disconnections.
struct PushHandler {
    hub: Arc<Hub>,
    node: String,
    channel: String,
    up: Arc<AtomicBool>,
    signals: mpsc::UnboundedSender<BusSignal>,
    peers: Peers,
}

impl PushHandler {
    /// Adds a node that announced itself to the peers.
    fn add_peer(&self, node: &str) {
        if node == self.node {
            return;
        }
        let mut peers = self
            .peers
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !peers.iter().any(|p| p == node) {
            let mut next = peers.to_vec();
            next.push(node.to_owned());
            *peers = Arc::from(next);
        }
    }

    fn handle(&self, info: PushInfo) {
        if info.kind == PushKind::Disconnection {
            if self.up.swap(false, Ordering::AcqRel) {
                tracing::warn!("redis connection lost: delivering to local sockets only");
            }
            return;
        }
        let Some(msg) = Msg::from_push_info(info) else {
            return;
        };
        if msg.get_channel_name() != self.channel {
            return;
        }
        let Ok(text) = std::str::from_utf8(msg.get_payload_bytes()) else {
            return;
        };
        if let Some(node) = text.strip_prefix("n\t") {
            return self.add_peer(node);
        }
        match parse_message(text) {
            Some(m) if m.origin() == self.node => {}
            Some(Message::Frame {
                user, popup, frame, ..
            }) => {
                let sent = self.hub.send(user, &Utf8Bytes::from(frame));
                if let (true, Some(p)) = (sent > 0, popup) {
                    let _ = self.signals.send(BusSignal::RemoteDelivered(p));
                }
            }
            Some(Message::Close { user, code, .. }) => self.hub.close_user(user, code),
            None => tracing::warn!("unreadable bus message ignored"),
        }
    }
}

/// A decoded bus message.
#[derive(Debug, PartialEq, Eq)]
enum Message {
    Frame {
        origin: String,
        user: UserId,
        popup: Option<PopupId>,
        frame: String,
    },
    Close {
        origin: String,
        user: UserId,
        code: u16,
    },
}

impl Message {
    fn origin(&self) -> &str {
        match self {
            Self::Frame { origin, .. } | Self::Close { origin, .. } => origin,
        }
    }
}

fn parse_message(text: &str) -> Option<Message> {
    let (kind, rest) = text.split_once('\t')?;
    let (origin, rest) = rest.split_once('\t')?;
    let (user, rest) = rest.split_once('\t')?;
    let user = UserId::parse(user).ok()?;
    let origin = origin.to_owned();
    match kind {
        "f" => {
            let (popup, frame) = rest.split_once('\t')?;
            let popup = match popup {
                "-" => None,
                p => Some(PopupId::parse(p).ok()?),
            };
            Some(Message::Frame {
                origin,
                user,
                popup,
                frame: frame.to_owned(),
            })
        }
        "c" => Some(Message::Close {
            origin,
            user,
            code: rest.parse().ok()?,
        }),
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_message_keeps_tabs_inside_the_frame_and_names_its_popup() {
        let user = UserId::parse("7c9e6679-7425-40de-944b-e07fc1f90ae7").unwrap();
        let popup = PopupId::parse("16fd2706-8baf-433b-82eb-8c7fada847da").unwrap();
        let text = format!("f\tnode-a\t{user}\t{popup}\t{{\"a\":\"x\\ty\"}}\tz");
        assert_eq!(
            parse_message(&text),
            Some(Message::Frame {
                origin: "node-a".into(),
                user,
                popup: Some(popup),
                frame: "{\"a\":\"x\\ty\"}\tz".into(),
            })
        );
        let none = format!("f\tn\t{user}\t-\t{{}}");
        assert!(matches!(
            parse_message(&none),
            Some(Message::Frame { popup: None, .. })
        ));
    }

    #[test]
    fn a_close_message_carries_its_code_and_junk_is_refused() {
        let user = UserId::parse("7c9e6679-7425-40de-944b-e07fc1f90ae7").unwrap();
        assert_eq!(
            parse_message(&format!("c\tn\t{user}\t4403")),
            Some(Message::Close {
                origin: "n".into(),
                user,
                code: 4403
            })
        );
        for junk in [
            "",
            "f",
            "x\tn\tu\t-\t{}",
            "c\tn\tnot-a-uuid\t4403",
            &format!("c\tn\t{user}\tclose"),
            &format!("f\tn\t{user}\tnot-a-popup\t{{}}"),
        ] {
            assert_eq!(parse_message(junk), None, "{junk:?}");
        }
    }
}
