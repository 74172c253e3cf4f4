//! The gateway's admin API as the benchmark uses it: teams, connectors, agents (users
//! with an extension and a token), lead owners (users with a phone number and a
//! provider agent id), leads, and counting a connector's activities. Every name, email,
//! extension and number carries a per-run nonce, so several runs can share one gateway
//! database; the run's connector is bound to the run's team, so the agents see it
//! whether or not it happens to be the gateway's default connector.

use anyhow::{Context, bail};
use futures_util::{StreamExt, TryStreamExt, stream};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::{SystemTime, UNIX_EPOCH};

/// How many admin requests run at once while setting up.
const SETUP_PARALLELISM: usize = 8;

/// A per-run random-ish number (clock nanoseconds mixed with the process id).
pub fn run_nonce() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    // Truncation is fine: only the low bits are wanted, mixed.
    #[allow(clippy::cast_possible_truncation)]
    let mut x = (nanos as u64) ^ (u64::from(std::process::id()) << 32);
    // splitmix64 finaliser
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The gateway's base URL without a trailing slash.
pub fn base_url(url: &str) -> String {
    url.trim_end_matches('/').to_owned()
}

/// The agent socket URL (`ws://host:port/ws`) of a gateway base URL.
///
/// # Errors
/// The URL is neither `http://` nor `https://`.
pub fn ws_url(base: &str) -> anyhow::Result<String> {
    if let Some(rest) = base.strip_prefix("http://") {
        Ok(format!("ws://{rest}/ws"))
    } else if let Some(rest) = base.strip_prefix("https://") {
        Ok(format!("wss://{rest}/ws"))
    } else {
        bail!("--url must start with http:// (got {base})")
    }
}

/// Where the gateway is and how to administer it (every mode's first two options).
#[derive(clap::Args, Debug)]
pub struct Gateway {
    /// Gateway base URL, e.g. http://127.0.0.1:8080.
    #[arg(long)]
    pub url: String,
    /// The gateway's admin token.
    #[arg(long)]
    pub admin_token: String,
}

/// A connector's provider credentials.
#[derive(Debug, Clone)]
pub struct Connector {
    /// Its id.
    pub id: String,
    /// `accessKey`.
    pub access_key: String,
    /// `secretKey`.
    pub secret_key: String,
}

impl Connector {
    /// The connector's `ShowAgentPopup` URL on `base`, keys in the query string (as
    /// LGTC providers send them; never print it).
    ///
    /// # Errors
    /// `base` is not a URL.
    pub fn popup_url(&self, base: &str) -> anyhow::Result<reqwest::Url> {
        Ok(reqwest::Url::parse_with_params(
            &format!("{base}/v2/Telephony.svc/ShowAgentPopup"),
            &[
                ("accessKey", self.access_key.as_str()),
                ("secretKey", self.secret_key.as_str()),
            ],
        )?)
    }
}

/// An agent ready to open sockets and receive popups.
#[derive(Debug, Clone)]
pub struct Agent {
    /// The extension popups are addressed to (`DestinationNumber`).
    pub extension: String,
    /// A JWT for the socket's `auth` frame.
    pub token: String,
}

/// A user who owns leads, for call routing: an E.164 number (the route answer's
/// `OwnerNumber`), an extension, and a provider agent id for one connector.
#[derive(Debug, Clone)]
pub struct Owner {
    /// Its user id.
    pub id: String,
    /// Its E.164 phone number (its first number).
    pub number: String,
    /// Its provider agent id for the connector (`TelephonyAgentId`).
    pub telephony_agent_id: String,
}

/// An admin API client.
#[derive(Debug, Clone)]
pub struct AdminClient {
    http: reqwest::Client,
    base: String,
    token: String,
}

/// Why an admin call failed: the status (when the gateway answered) and a description.
#[derive(Debug)]
struct CallError {
    status: Option<StatusCode>,
    error: anyhow::Error,
}

impl AdminClient {
    /// A client for the gateway at `base` with the admin bearer `token`.
    pub fn new(http: reqwest::Client, base: &str, token: &str) -> Self {
        Self {
            http,
            base: base_url(base),
            token: token.to_owned(),
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, CallError> {
        let url = format!("{}{path}", self.base);
        let mut req = self
            .http
            .request(method.clone(), &url)
            .bearer_auth(&self.token);
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = req.send().await.map_err(|e| CallError {
            status: None,
            error: anyhow::Error::new(e).context(format!("{method} {path}")),
        })?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| CallError {
            status: Some(status),
            error: anyhow::Error::new(e).context(format!("{method} {path}: reading the body")),
        })?;
        if !status.is_success() {
            return Err(CallError {
                status: Some(status),
                error: anyhow::anyhow!("{method} {path} answered {status}: {text}"),
            });
        }
        serde_json::from_str(&text).map_err(|e| CallError {
            status: Some(status),
            error: anyhow::Error::new(e)
                .context(format!("{method} {path}: the answer is not JSON: {text}")),
        })
    }

    async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.call(reqwest::Method::POST, path, Some(body))
            .await
            .map_err(|e| e.error)
    }

    async fn get(&self, path_and_query: &str) -> anyhow::Result<Value> {
        self.call(reqwest::Method::GET, path_and_query, None)
            .await
            .map_err(|e| e.error)
    }

    /// Creates a team; returns its id.
    ///
    /// # Errors
    /// The gateway refused or could not be reached.
    pub async fn create_team(&self, name: &str) -> anyhow::Result<String> {
        let v = self.post("/api/v1/teams", &json!({ "name": name })).await?;
        str_field(&v, "id")
    }

    /// A team `<label>-<run>` and a connector `<label> <run>` assigned to it: the
    /// setup every benchmark run starts with; returns the team id and the connector.
    ///
    /// # Errors
    /// The gateway refused or could not be reached.
    pub async fn bench_connector(
        &self,
        label: &str,
        run: u64,
    ) -> anyhow::Result<(String, Connector)> {
        let team = self
            .create_team(&format!("{label}-{run:016x}"))
            .await
            .context("creating the team")?;
        let connector = self
            .create_connector(&format!("{label} {run:016x}"), &team)
            .await
            .context("creating the connector")?;
        Ok((team, connector))
    }

    /// Creates a generic connector, binds it to `team_id`, and returns its keys.
    ///
    /// # Errors
    /// The gateway refused or could not be reached.
    pub async fn create_connector(&self, name: &str, team_id: &str) -> anyhow::Result<Connector> {
        let v = self
            .post("/api/v1/connectors", &json!({ "name": name }))
            .await?;
        let c = Connector {
            id: str_field(&v, "id")?,
            access_key: str_field(&v, "access_key")?,
            secret_key: str_field(&v, "secret_key")?,
        };
        self.call(
            reqwest::Method::PUT,
            &format!("/api/v1/connectors/{}/teams", c.id),
            Some(&json!({ "team_ids": [team_id] })),
        )
        .await
        .map_err(|e| e.error)?;
        Ok(c)
    }

    /// Creates one agent of `team_id` with a six-digit extension derived from
    /// `nonce` and `index`, and issues its token. A taken extension (409/422) is retried
    /// a few times with another one.
    ///
    /// # Errors
    /// The gateway refused or could not be reached.
    pub async fn create_agent(
        &self,
        nonce: u64,
        index: usize,
        team_id: &str,
    ) -> anyhow::Result<Agent> {
        let mut last = None;
        for attempt in 0..5u64 {
            let extension = extension(nonce.wrapping_add(attempt.wrapping_mul(0x9e37_79b9)), index);
            let email = format!("agent{index}.{nonce:016x}.{attempt}@bench.test");
            let body = json!({
                "name": format!("Bench agent {index}"),
                "email": email,
                "phone_numbers": [extension],
                "team_ids": [team_id],
            });
            match self
                .call(reqwest::Method::POST, "/api/v1/users", Some(&body))
                .await
            {
                Ok(v) => {
                    let id = str_field(&v, "id")?;
                    let t = self
                        .post(&format!("/api/v1/users/{id}/tokens"), &json!({}))
                        .await?;
                    return Ok(Agent {
                        extension,
                        token: str_field(&t, "token")?,
                    });
                }
                Err(CallError {
                    status: Some(s),
                    error,
                }) if s == StatusCode::CONFLICT || s == StatusCode::UNPROCESSABLE_ENTITY => {
                    last = Some(error);
                }
                Err(e) => return Err(e.error),
            }
        }
        Err(last
            .unwrap_or_else(|| anyhow::anyhow!("creating agent {index} failed"))
            .context(format!("creating agent {index}")))
    }

    /// Creates a lead owner of `team_id`: an agent with an E.164 mobile number derived
    /// from `nonce` (`+9170` and eight digits) and an extension as its numbers, and
    /// `connector_id`'s provider agent id. A taken number or extension (409/422) is
    /// retried a few times with others.
    ///
    /// # Errors
    /// The gateway refused or could not be reached.
    pub async fn create_owner(
        &self,
        nonce: u64,
        team_id: &str,
        connector_id: &str,
    ) -> anyhow::Result<Owner> {
        let mut last = None;
        for attempt in 0..5u64 {
            let salt = nonce.wrapping_add(attempt.wrapping_mul(0x9e37_79b9));
            let number = format!("+9170{:08}", salt % 100_000_000);
            let telephony_agent_id = format!("bench-agent-{nonce:016x}");
            let body = json!({
                "name": format!("Bench owner {nonce:016x}"),
                "email": format!("owner.{nonce:016x}.{attempt}@bench.test"),
                "phone_numbers": [number, extension(salt, 0)],
                "team_ids": [team_id],
                "provider_agent_ids": { connector_id: telephony_agent_id },
            });
            match self
                .call(reqwest::Method::POST, "/api/v1/users", Some(&body))
                .await
            {
                Ok(v) => {
                    return Ok(Owner {
                        id: str_field(&v, "id")?,
                        number,
                        telephony_agent_id,
                    });
                }
                Err(CallError {
                    status: Some(s),
                    error,
                }) if s == StatusCode::CONFLICT || s == StatusCode::UNPROCESSABLE_ENTITY => {
                    last = Some(error);
                }
                Err(e) => return Err(e.error),
            }
        }
        Err(last
            .unwrap_or_else(|| anyhow::anyhow!("creating the lead owner failed"))
            .context("creating the lead owner"))
    }

    /// Creates `count` agents of `team_id` (a few requests at a time), in index order.
    ///
    /// # Errors
    /// The first agent that could not be created.
    pub async fn create_agents(
        &self,
        nonce: u64,
        count: usize,
        team_id: &str,
    ) -> anyhow::Result<Vec<Agent>> {
        stream::iter(0..count)
            .map(|i| self.create_agent(nonce, i, team_id))
            .buffered(SETUP_PARALLELISM)
            .try_collect()
            .await
    }

    /// Creates `count` leads with distinct mobile numbers derived from `nonce`; returns
    /// the numbers (E.164) in order.
    ///
    /// # Errors
    /// More than 100 000 leads asked for, or the gateway refused.
    pub async fn create_leads(&self, nonce: u64, count: usize) -> anyhow::Result<Vec<String>> {
        if count > 100_000 {
            bail!("--leads must be at most 100000");
        }
        let block = nonce % 10_000;
        let numbers: Vec<String> = (0..count)
            .map(|i| format!("+919{block:04}{i:05}"))
            .collect();
        stream::iter(numbers.iter().enumerate())
            .map(|(i, n)| async move {
                self.post(
                    "/api/v1/leads",
                    &json!({ "first_name": "Lead", "last_name": format!("{i}"), "phone": n }),
                )
                .await
                .with_context(|| format!("creating lead {n}"))
            })
            .buffered(SETUP_PARALLELISM)
            .try_collect::<Vec<Value>>()
            .await?;
        Ok(numbers)
    }
}

/// What [`AdminClient::count_activities`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActivityCount {
    /// Activities of the connector.
    pub activities: usize,
    /// Distinct `call_session_id`s among them.
    pub distinct_sessions: usize,
    /// Activities of any connector seen while paging.
    pub scanned: usize,
    /// Pages read.
    pub pages: usize,
}

impl AdminClient {
    /// Pages through `GET /api/v1/activities` (500 a page, newest first) and counts the
    /// activities whose `connector_id` is `connector_id`.
    ///
    /// # Errors
    /// The gateway refused, a page is malformed, or the cursor does not advance.
    pub async fn count_activities(&self, connector_id: &str) -> anyhow::Result<ActivityCount> {
        let mut count = ActivityCount {
            activities: 0,
            distinct_sessions: 0,
            scanned: 0,
            pages: 0,
        };
        let mut sessions = std::collections::HashSet::new();
        let mut cursor: Option<String> = None;
        loop {
            // Only the path and the (encoded) query are used; `call` prepends the base.
            let mut url = reqwest::Url::parse("http://gateway/api/v1/activities?limit=500")?;
            if let Some(c) = &cursor {
                url.query_pairs_mut().append_pair("cursor", c);
            }
            let path = match url.query() {
                Some(q) => format!("{}?{q}", url.path()),
                None => url.path().to_owned(),
            };
            let page = self
                .get(&path)
                .await
                .with_context(|| format!("reading activities page {}", count.pages + 1))?;
            count.pages += 1;
            let items = page
                .get("items")
                .and_then(Value::as_array)
                .with_context(|| format!("an activities page has no `items` array: {page}"))?;
            for item in items {
                count.scanned += 1;
                if item.get("connector_id").and_then(Value::as_str) == Some(connector_id) {
                    count.activities += 1;
                    if let Some(s) = item.get("call_session_id").and_then(Value::as_str) {
                        sessions.insert(s.to_owned());
                    }
                }
            }
            match page.get("next_cursor") {
                None | Some(Value::Null) => break,
                Some(Value::String(next)) => {
                    if items.is_empty() || cursor.as_deref() == Some(next.as_str()) {
                        bail!("the activities cursor does not advance ({next})");
                    }
                    cursor = Some(next.clone());
                }
                Some(other) => bail!("`next_cursor` is neither null nor a string: {other}"),
            }
        }
        count.distinct_sessions = sessions.len();
        Ok(count)
    }
}

/// A six-digit extension (100000..=999999) for agent `index` of the run `nonce`.
fn extension(nonce: u64, index: usize) -> String {
    let start = nonce % 900_000;
    let n = (start + index as u64) % 900_000 + 100_000;
    n.to_string()
}

fn str_field(v: &Value, name: &str) -> anyhow::Result<String> {
    v.get(name)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .with_context(|| format!("the answer has no string `{name}`: {v}"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn extensions_are_six_digits_and_distinct_within_a_run() {
        let n = run_nonce();
        let all: std::collections::HashSet<String> = (0..1000).map(|i| extension(n, i)).collect();
        assert_eq!(all.len(), 1000);
        assert!(all.iter().all(|e| e.len() == 6));
        assert_eq!(extension(899_999, 1), "100000");
    }

    #[test]
    fn socket_urls_follow_the_scheme() {
        assert_eq!(
            ws_url("http://127.0.0.1:8080").unwrap(),
            "ws://127.0.0.1:8080/ws"
        );
        assert_eq!(
            ws_url(&base_url("https://gw.example/")).unwrap(),
            "wss://gw.example/ws"
        );
        assert!(ws_url("ftp://x").is_err());
    }
}
