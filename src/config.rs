//! Typed settings: defaults < `config.toml` (or `--config <path>`) < `UTC__SECTION__KEY`
//! environment variables. Every key is documented in the root `config.toml`.

use anyhow::{Context, bail};
use figment::Figment;
use figment::providers::{Env, Format, Toml};
use secrecy::SecretString;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::Path;

/// All settings of a node.
#[derive(Deserialize, Default, Clone)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// HTTP server.
    pub server: ServerSettings,
    /// Database.
    pub store: StoreSettings,
    /// Phone numbers.
    pub phone: PhoneSettings,
    /// Tokens.
    pub auth: AuthSettings,
    /// Provider rate limits.
    pub limits: LimitSettings,
    /// Lead import.
    pub import: ImportSettings,
    /// Popup lifetimes.
    pub popup: PopupSettings,
    /// Agent sockets.
    pub ws: WsSettings,
    /// Outbound retry queue.
    pub outbox: OutboxSettings,
    /// Several nodes sharing Redis.
    pub cluster: ClusterSettings,
    /// Telephony-log pruning.
    pub telephony_log: TelephonyLogSettings,
    /// Logging.
    pub log: LogSettings,
}

/// `[server]`
#[derive(Deserialize, Clone, Debug)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSettings {
    /// Address to bind (port 0 = any).
    pub listen: SocketAddr,
    /// Base of URLs handed out.
    pub public_url: String,
    /// Larger request bodies answer 413.
    pub max_body_bytes: usize,
    /// A request still running after this answers 503.
    pub request_timeout_secs: u64,
    /// How long in-flight work may take after SIGTERM.
    pub shutdown_grace_secs: u64,
    /// Extra browser origins allowed to open `/ws`.
    pub allowed_origins: Vec<String>,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            public_url: "http://localhost:8080".into(),
            max_body_bytes: 65536,
            request_timeout_secs: 10,
            shutdown_grace_secs: 20,
            allowed_origins: Vec::new(),
        }
    }
}

/// `[store]`
#[derive(Deserialize, Clone, Debug)]
#[serde(default, deny_unknown_fields)]
pub struct StoreSettings {
    /// `sqlite://<path>` (relative to the working directory) or `postgres://…`.
    pub url: String,
}

impl Default for StoreSettings {
    fn default() -> Self {
        Self {
            url: "sqlite://data/utc.db".into(),
        }
    }
}

/// `[phone]`
#[derive(Deserialize, Clone, Debug)]
#[serde(default, deny_unknown_fields)]
pub struct PhoneSettings {
    /// Region for numbers no connector applies to.
    pub default_country: String,
}

impl Default for PhoneSettings {
    fn default() -> Self {
        Self {
            default_country: "IN".into(),
        }
    }
}

/// `[auth]` — holds secrets, so no `Debug`.
#[derive(Deserialize, Clone)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// Admin bearer token; generated and kept in the store when absent.
    pub admin_token: Option<SecretString>,
    /// HS256 key of agent tokens; generated and kept in the store when absent.
    pub jwt_secret: Option<SecretString>,
    /// Agent token lifetime.
    pub token_ttl_secs: u64,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            admin_token: None,
            jwt_secret: None,
            token_ttl_secs: 43200,
        }
    }
}

/// `[limits]`
#[derive(Deserialize, Clone, Debug)]
#[serde(default, deny_unknown_fields)]
pub struct LimitSettings {
    /// Provider requests per second per connector, per node.
    pub provider_rate_per_sec: u32,
    /// Burst above the rate.
    pub provider_burst: u32,
}

impl Default for LimitSettings {
    fn default() -> Self {
        Self {
            provider_rate_per_sec: 50,
            provider_burst: 100,
        }
    }
}

/// `[import]`
#[derive(Deserialize, Clone, Debug)]
#[serde(default, deny_unknown_fields)]
pub struct ImportSettings {
    /// Body limit of the lead import.
    pub max_bytes: usize,
}

impl Default for ImportSettings {
    fn default() -> Self {
        Self {
            max_bytes: 104_857_600,
        }
    }
}

/// `[popup]`
#[derive(Deserialize, Clone, Debug)]
#[serde(default, deny_unknown_fields)]
pub struct PopupSettings {
    /// How long a popup may stay `queued`.
    pub ttl_secs: u64,
    /// How long a delivered popup stays open.
    pub open_max_secs: u64,
}

impl Default for PopupSettings {
    fn default() -> Self {
        Self {
            ttl_secs: 120,
            open_max_secs: 86400,
        }
    }
}

/// `[ws]`
#[derive(Deserialize, Clone, Debug)]
#[serde(default, deny_unknown_fields)]
pub struct WsSettings {
    /// Time allowed for the `auth` frame.
    pub auth_timeout_secs: u64,
    /// Ping period.
    pub heartbeat_secs: u64,
    /// A socket silent this long is closed (4408).
    pub idle_timeout_secs: u64,
    /// Frames queued per socket before it is closed (1013).
    pub queue_capacity: usize,
    /// Larger client frames close the socket (1008).
    pub max_message_bytes: usize,
    /// Sockets per user (4429 over it).
    pub max_sockets_per_user: usize,
    /// Sockets per node (503 at upgrade over it).
    pub max_sockets: usize,
}

impl Default for WsSettings {
    fn default() -> Self {
        Self {
            auth_timeout_secs: 10,
            heartbeat_secs: 25,
            idle_timeout_secs: 60,
            queue_capacity: 256,
            max_message_bytes: 65536,
            max_sockets_per_user: 10,
            max_sockets: 50000,
        }
    }
}

/// `[outbox]`
#[derive(Deserialize, Clone, Debug)]
#[serde(default, deny_unknown_fields)]
pub struct OutboxSettings {
    /// First retry delay.
    pub initial_backoff_ms: u64,
    /// Longest retry delay.
    pub max_backoff_secs: u64,
    /// Deliveries in flight per connector, per node.
    pub concurrency_per_connector: usize,
    /// After this an undelivered item is `failed`.
    pub max_age_secs: u64,
}

impl Default for OutboxSettings {
    fn default() -> Self {
        Self {
            initial_backoff_ms: 1000,
            max_backoff_secs: 600,
            concurrency_per_connector: 4,
            max_age_secs: 86400,
        }
    }
}

/// `[cluster]`
#[derive(Deserialize, Clone, Debug, Default)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterSettings {
    /// Enables the Redis bus (requires a PostgreSQL store).
    pub redis_url: Option<String>,
    /// This node's name (default hostname-pid).
    pub node_id: Option<String>,
    /// Presence TTL.
    pub presence_ttl_secs: Option<u64>,
    /// Prefix of every Redis key and channel.
    pub key_prefix: Option<String>,
}

/// `[telephony_log]`
#[derive(Deserialize, Clone, Debug)]
#[serde(default, deny_unknown_fields)]
pub struct TelephonyLogSettings {
    /// Rows older than this are pruned.
    pub retention_days: u64,
    /// At most this many rows are kept.
    pub max_rows: u64,
}

impl Default for TelephonyLogSettings {
    fn default() -> Self {
        Self {
            retention_days: 30,
            max_rows: 1_000_000,
        }
    }
}

/// `[log]`
#[derive(Deserialize, Clone, Debug)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    /// `pretty` or `json`.
    pub format: String,
    /// An EnvFilter directive.
    pub level: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: "pretty".into(),
            level: "info".into(),
        }
    }
}

impl Settings {
    /// Loads settings: `path` when given (it must exist), else `./config.toml` when
    /// present, then `UTC__SECTION__KEY` environment overrides; then validates.
    ///
    /// # Errors
    /// A missing `--config` file, unreadable TOML, a wrong type or an invalid value.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Self> {
        let mut fig = Figment::new();
        match path {
            Some(p) => {
                if !p.exists() {
                    bail!("config file {} does not exist", p.display());
                }
                fig = fig.merge(Toml::file(p));
            }
            None => {
                if Path::new("config.toml").exists() {
                    fig = fig.merge(Toml::file("config.toml"));
                }
            }
        }
        let settings: Settings = fig
            .merge(Env::prefixed("UTC__").split("__"))
            .extract()
            .context("reading settings")?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks values that types alone cannot.
    ///
    /// # Errors
    /// The first invalid setting, named.
    pub fn validate(&self) -> anyhow::Result<()> {
        crate::domain::phone::Country::parse(&self.phone.default_country)
            .context("phone.default_country must be an ISO 3166 alpha-2 code")?;
        url::Url::parse(&self.server.public_url).context("server.public_url must be a URL")?;
        if !(self.store.url.starts_with("sqlite:") || self.store.url.starts_with("postgres")) {
            bail!("store.url must start with sqlite:// or postgres://");
        }
        if self.cluster.redis_url.is_some() && !self.store.url.starts_with("postgres") {
            bail!("cluster.redis_url requires a PostgreSQL store (store.url = postgres://…)");
        }
        if !matches!(self.log.format.as_str(), "pretty" | "json") {
            bail!("log.format must be pretty or json");
        }
        for (name, v) in [
            ("ws.queue_capacity", self.ws.queue_capacity),
            ("ws.max_message_bytes", self.ws.max_message_bytes),
            ("ws.max_sockets_per_user", self.ws.max_sockets_per_user),
            ("server.max_body_bytes", self.server.max_body_bytes),
            ("import.max_bytes", self.import.max_bytes),
        ] {
            if v == 0 {
                bail!("{name} must be greater than 0");
            }
        }
        if self.ws.heartbeat_secs == 0 || self.ws.idle_timeout_secs <= self.ws.heartbeat_secs {
            bail!("ws.idle_timeout_secs must be greater than ws.heartbeat_secs (> 0)");
        }
        Ok(())
    }
}
