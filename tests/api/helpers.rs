//! `spawn_app()` and the `TestApp` helpers every test uses.

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use utc_gateway::app::App;
use utc_gateway::config::Settings;
use utc_gateway::state::AppState;

/// How long a test waits for something that should happen at once.
pub const WAIT: Duration = Duration::from_secs(10);

pub struct TestApp {
    pub addr: SocketAddr,
    pub admin_token: String,
    pub client: reqwest::Client,
    pub state: AppState,
    pub handle: tokio::task::JoinHandle<anyhow::Result<()>>,
    pub settings: Settings,
    pub store: TestStore,
}

/// Whether this run tests the PostgreSQL store (`UTC_TEST_STORE=postgres`).
pub fn on_postgres() -> bool {
    std::env::var("UTC_TEST_STORE").is_ok_and(|v| v == "postgres")
}

/// The PostgreSQL server the tests use, without a database (`UTC_TEST_PG_URL`, default
/// `postgres://postgres@127.0.0.1:5432`).
fn pg_server() -> url::Url {
    let raw = std::env::var("UTC_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
    let mut server = url::Url::parse(&raw).expect("UTC_TEST_PG_URL is a URL");
    server.set_path("");
    server
}

fn pg_database_url(name: &str) -> String {
    let mut url = pg_server();
    url.set_path(name);
    url.to_string()
}

/// The store a test app runs on, with a temporary directory: a SQLite file in it, or
/// with `UTC_TEST_STORE=postgres` a fresh database `utc_test_<uuid>`, dropped when this
/// is dropped (`scripts/test` also drops ones left by an aborted run).
pub struct TestStore {
    /// The `store.url`.
    pub url: String,
    pub dir: tempfile::TempDir,
    database: Option<String>,
}

impl TestStore {
    pub async fn new() -> TestStore {
        if on_postgres() {
            return Self::postgres().await;
        }
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/utc.db", dir.path().display());
        TestStore {
            url,
            dir,
            database: None,
        }
    }

    /// A fresh PostgreSQL database whatever `UTC_TEST_STORE` says (cluster tests).
    pub async fn postgres() -> TestStore {
        use sqlx::Connection as _;
        let dir = tempfile::tempdir().unwrap();
        let name = format!("utc_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = sqlx::PgConnection::connect(&pg_database_url("postgres"))
            .await
            .expect("PostgreSQL answers at UTC_TEST_PG_URL (default 127.0.0.1:5432)");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .unwrap();
        admin.close().await.unwrap();
        TestStore {
            url: pg_database_url(&name),
            dir,
            database: Some(name),
        }
    }
}

impl TestStore {
    /// The same database for another node; dropping it leaves the database alone.
    pub fn shared(&self) -> TestStore {
        TestStore {
            url: self.url.clone(),
            dir: tempfile::tempdir().unwrap(),
            database: None,
        }
    }
}

impl Drop for TestStore {
    fn drop(&mut self) {
        let Some(name) = self.database.take() else {
            return;
        };
        // Dropped inside the test's runtime: the DROP runs on a thread of its own.
        // FORCE ends the connections the app still holds.
        let admin = pg_database_url("postgres");
        let dropped = std::thread::spawn(move || {
            use sqlx::Connection as _;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let mut c = sqlx::PgConnection::connect(&admin).await?;
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .execute(&mut c)
                .await?;
                c.close().await
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("test database not dropped: {dropped:?}");
        }
    }
}

/// A connector created through the API, with its keys.
pub struct TestConnector {
    pub id: String,
    pub access_key: String,
    pub secret_key: String,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(tweak: impl FnOnce(&mut Settings)) -> TestApp {
    let store = TestStore::new().await;
    let mut settings = Settings::default();
    settings.server.listen = "127.0.0.1:0".parse().unwrap();
    settings.store.url = store.url.clone();
    let admin_token = format!("admin-{}", uuid::Uuid::new_v4());
    settings.auth.admin_token = Some(admin_token.clone().into());
    settings.log.level = "warn".into();
    settings.validate().unwrap();
    // tweaks may step outside what validate() allows (e.g. an idle timeout shorter than
    // the heartbeat, to test idle closing without pings)
    tweak(&mut settings);
    start(settings, admin_token, store).await
}

async fn start(settings: Settings, admin_token: String, store: TestStore) -> TestApp {
    let app = App::build(settings.clone()).await.unwrap();
    let addr = app.local_addr().unwrap();
    let state = app.state().clone();
    let handle = tokio::spawn(app.run_until_stopped());
    TestApp {
        addr,
        admin_token,
        client: reqwest::Client::new(),
        state,
        handle,
        settings,
        store,
    }
}

impl TestApp {
    /// Another node: a second gateway on the same database, with the same settings.
    pub async fn second_node(&self) -> TestApp {
        start(
            self.settings.clone(),
            self.admin_token.clone(),
            self.store.shared(),
        )
        .await
    }

    /// Stops the gateway (as SIGTERM would) and starts a new one on the same database.
    pub async fn restart(self) -> TestApp {
        self.state.shutdown.token.cancel();
        self.handle.await.unwrap().unwrap();
        start(self.settings, self.admin_token, self.store).await
    }

    /// Posts a call log with keys in headers; returns status and body.
    pub async fn post_call_log(
        &self,
        c: &TestConnector,
        body: &str,
        content_type: &str,
    ) -> (u16, Value) {
        let res = self
            .client
            .post(self.url("/v2/Telephony.svc/LogCall"))
            .header("x-LSQ-AccessKey", &c.access_key)
            .header("x-LSQ-SecretKey", &c.secret_key)
            .header("content-type", content_type)
            .body(body.to_owned())
            .send()
            .await
            .unwrap();
        (res.status().as_u16(), res.json().await.unwrap())
    }

    pub async fn all_activities(&self) -> Vec<Value> {
        self.admin_get("/api/v1/activities?limit=500").await["items"]
            .as_array()
            .unwrap()
            .clone()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// An admin API call; returns status and JSON body (null when empty).
    pub async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self
            .client
            .request(method, self.url(path))
            .bearer_auth(&self.admin_token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        let text = res.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn admin_get(&self, path: &str) -> Value {
        let (status, body) = self.admin(reqwest::Method::GET, path, None).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    pub async fn admin_post(&self, path: &str, body: Value) -> Value {
        let (status, out) = self.admin(reqwest::Method::POST, path, Some(body)).await;
        assert_eq!(status, 201, "POST {path}: {out}");
        out
    }

    pub async fn create_connector(&self, body: Value) -> TestConnector {
        let c = self.admin_post("/api/v1/connectors", body).await;
        TestConnector {
            id: c["id"].as_str().unwrap().to_owned(),
            access_key: c["access_key"].as_str().unwrap().to_owned(),
            secret_key: c["secret_key"].as_str().unwrap().to_owned(),
        }
    }

    /// A connector named "Exotel" with the given disposition form.
    pub async fn connector(&self) -> TestConnector {
        self.create_connector(
            json!({"name": "Exotel", "disposition": {"values": ["Interested", "Not interested"]}}),
        )
        .await
    }

    /// Adds the virtual number 08069000000 tagged "Sales" to `c`.
    pub async fn sales_number(&self, c: &TestConnector) -> Value {
        self.admin_post(
            &format!("/api/v1/connectors/{}/virtual-numbers", c.id),
            json!({"number": "08069000000", "tag": "Sales"}),
        )
        .await
    }

    /// Creates an agent with these numbers; returns (id, token).
    pub async fn agent(&self, email: &str, numbers: &[&str]) -> (String, String) {
        let u = self
            .admin_post(
                "/api/v1/users",
                json!({"name": email, "email": email, "phone_numbers": numbers}),
            )
            .await;
        let id = u["id"].as_str().unwrap().to_owned();
        let t = self
            .admin_post(&format!("/api/v1/users/{id}/tokens"), json!({}))
            .await;
        (id, t["token"].as_str().unwrap().to_owned())
    }

    pub async fn create_lead(&self, body: Value) -> String {
        self.admin_post("/api/v1/leads", body).await["id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    pub async fn leads_with_phone(&self, phone: &str) -> Vec<Value> {
        let v = self
            .admin_get(&format!("/api/v1/leads?phone={}", urlencode(phone)))
            .await;
        v["items"].as_array().unwrap().clone()
    }

    pub async fn lead_count(&self) -> usize {
        self.admin_get("/api/v1/leads?limit=500").await["items"]
            .as_array()
            .unwrap()
            .len()
    }

    pub async fn activities(&self, lead_id: &str) -> Vec<Value> {
        self.admin_get(&format!("/api/v1/activities?lead_id={lead_id}"))
            .await["items"]
            .as_array()
            .unwrap()
            .clone()
    }

    /// Posts an agent popup with keys in the query string; returns status and body.
    pub async fn post_popup(&self, c: &TestConnector, body: &str) -> (u16, Value) {
        let res = self
            .client
            .post(self.url(&format!(
                "/v2/Telephony.svc/ShowAgentPopup?accessKey={}&secretKey={}",
                c.access_key, c.secret_key
            )))
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .unwrap();
        (res.status().as_u16(), res.json().await.unwrap())
    }

    /// Posts a generic inbound popup from `caller` to the agent on `agent_number`.
    pub async fn popup(
        &self,
        c: &TestConnector,
        caller: &str,
        agent_number: &str,
        session: &str,
    ) -> Value {
        let body = json!({"SourceNumber": caller, "DestinationNumber": agent_number, "Direction": "Inbound", "CallSessionId": session});
        let (status, out) = self.post_popup(c, &body.to_string()).await;
        assert_eq!(status, 200, "{out}");
        out["Message"].clone()
    }

    /// Waits until telephony-log rows matching `query` exist (they are written off the
    /// request path) and returns them.
    pub async fn telephony_logs(&self, query: &str, at_least: usize) -> Vec<Value> {
        tokio::time::timeout(WAIT, async {
            loop {
                let rows = self
                    .admin_get(&format!("/api/v1/telephony-logs?{query}"))
                    .await["items"]
                    .as_array()
                    .unwrap()
                    .clone();
                if rows.len() >= at_least {
                    return rows;
                }
                tokio::task::yield_now().await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("telephony-log rows did not appear")
    }

    /// Opens an agent socket and authenticates; returns it after `ready`.
    pub async fn agent_socket(&self, token: &str, since: Option<i64>) -> (AgentSocket, Value) {
        let mut s = self.raw_socket().await;
        s.send(json!({"type": "auth", "token": token, "since": since}))
            .await;
        let ready = s.expect("ready").await;
        (s, ready)
    }

    pub async fn raw_socket(&self) -> AgentSocket {
        let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", self.addr))
            .await
            .unwrap();
        AgentSocket { ws }
    }
}

pub fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

pub struct AgentSocket {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// What a socket saw next.
#[derive(Debug)]
pub enum Seen {
    Frame(Value),
    Closed(Option<u16>),
}

impl AgentSocket {
    pub async fn send(&mut self, v: Value) {
        self.ws
            .send(Message::Text(v.to_string().into()))
            .await
            .unwrap();
    }

    /// The next JSON frame or the close, skipping pings.
    pub async fn next(&mut self) -> Seen {
        tokio::time::timeout(WAIT, async {
            loop {
                match self.ws.next().await {
                    Some(Ok(Message::Text(t))) => {
                        return Seen::Frame(serde_json::from_str(t.as_str()).unwrap());
                    }
                    Some(Ok(Message::Close(f))) => {
                        return Seen::Closed(f.map(|f| u16::from(f.code)));
                    }
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => return Seen::Closed(None),
                }
            }
        })
        .await
        .expect("no frame within the wait")
    }

    /// The next frame, which must have this `type`.
    pub async fn expect(&mut self, kind: &str) -> Value {
        match self.next().await {
            Seen::Frame(f) if f["type"] == kind => f,
            other => panic!("expected a {kind} frame, saw {other:?}"),
        }
    }

    /// The close code the server sends next.
    pub async fn expect_close(&mut self) -> Option<u16> {
        loop {
            match self.next().await {
                Seen::Closed(code) => return code,
                Seen::Frame(_) => {}
            }
        }
    }

    /// Sends a ping frame and waits for its pong: every frame the server queued before
    /// is then known to have been read (or is in `seen`).
    pub async fn drain(&mut self) -> Vec<Value> {
        self.send(json!({"type": "ping"})).await;
        let mut seen = Vec::new();
        loop {
            match self.next().await {
                Seen::Frame(f) if f["type"] == "pong" => return seen,
                Seen::Frame(f) => seen.push(f),
                Seen::Closed(c) => panic!("closed while draining: {c:?}"),
            }
        }
    }
}

/// A request the fake provider received.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub _path: String,
    pub query: Vec<(String, String)>,
    pub headers: axum::http::HeaderMap,
    pub body: String,
}

/// A real local HTTP server playing the provider: it records every request and answers
/// from a script of (status, body), repeating the last.
#[derive(Clone)]
pub struct FakeProvider {
    pub addr: SocketAddr,
    pub received: std::sync::Arc<std::sync::Mutex<Vec<Received>>>,
    answers: std::sync::Arc<std::sync::Mutex<Vec<(u16, String)>>>,
}

impl FakeProvider {
    pub async fn start(answers: Vec<(u16, &str)>) -> FakeProvider {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let provider = FakeProvider {
            addr,
            received: Default::default(),
            answers: std::sync::Arc::new(std::sync::Mutex::new(
                answers
                    .into_iter()
                    .map(|(s, b)| (s, b.to_owned()))
                    .collect(),
            )),
        };
        let p = provider.clone();
        let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
            let p = p.clone();
            async move {
                let (parts, body) = req.into_parts();
                let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap();
                let query =
                    url::form_urlencoded::parse(parts.uri.query().unwrap_or_default().as_bytes())
                        .into_owned()
                        .collect();
                p.received.lock().unwrap().push(Received {
                    method: parts.method.to_string(),
                    _path: parts.uri.path().to_owned(),
                    query,
                    headers: parts.headers.clone(),
                    body: String::from_utf8_lossy(&bytes).into_owned(),
                });
                let (status, body) = {
                    let mut a = p.answers.lock().unwrap();
                    if a.len() > 1 {
                        a.remove(0)
                    } else {
                        a[0].clone()
                    }
                };
                (axum::http::StatusCode::from_u16(status).unwrap(), body)
            }
        });
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        provider
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Replaces the script of answers.
    pub fn answer(&self, answers: Vec<(u16, &str)>) {
        *self.answers.lock().unwrap() = answers
            .into_iter()
            .map(|(s, b)| (s, b.to_owned()))
            .collect();
    }

    pub fn requests(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

/// Waits (polling the admin API) until an outbox item has `status`; returns it. The
/// wait covers a claim left by a killed process (its timeout + 30 s).
pub async fn outbox_item(app_url: &str, admin_token: &str, status: &str) -> Value {
    let client = reqwest::Client::new();
    tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            if let Ok(res) = client
                .get(format!("{app_url}/api/v1/outbox?status={status}"))
                .bearer_auth(admin_token)
                .send()
                .await
                && let Ok(v) = res.json::<Value>().await
                && let Some(item) = v["items"].as_array().and_then(|a| a.first())
            {
                return item.clone();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no outbox item became {status}"))
}

/// A cluster node on `store` (PostgreSQL) and `redis_url`, named `node_id`, with a short presence TTL.
pub async fn start_node(
    store: &TestStore,
    redis_url: &str,
    node_id: &str,
    presence_ttl_secs: u64,
) -> TestApp {
    let mut settings = Settings::default();
    settings.server.listen = "127.0.0.1:0".parse().unwrap();
    settings.store.url = store.url.clone();
    let admin_token = "admin-cluster".to_owned();
    settings.auth.admin_token = Some(admin_token.clone().into());
    settings.log.level = "warn".into();
    settings.cluster.redis_url = Some(redis_url.to_owned());
    settings.cluster.node_id = Some(node_id.to_owned());
    settings.cluster.presence_ttl_secs = Some(presence_ttl_secs);
    settings.validate().unwrap();
    start(settings, admin_token, store.shared()).await
}

/// The real binary serving `store` from its directory on a free port, with the admin
/// token and extra `UTC__…` settings; returns the child (killed on drop) and its URL.
pub async fn start_binary(
    store: &TestStore,
    admin: &str,
    settings: &[(&str, String)],
) -> (tokio::process::Child, String) {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_utc-gateway"))
        .arg("serve")
        .current_dir(store.dir.path())
        .env("UTC__SERVER__LISTEN", "127.0.0.1:0")
        .env("UTC__STORE__URL", &store.url)
        .env("UTC__AUTH__ADMIN_TOKEN", admin)
        .env("UTC__LOG__LEVEL", "warn")
        .envs(settings.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let url = tokio::time::timeout(WAIT, async {
        loop {
            let line = lines
                .next_line()
                .await
                .unwrap()
                .expect("the gateway exited");
            if let Some(url) = line.strip_prefix("utc-gateway listening on ") {
                return url.trim().to_owned();
            }
        }
    })
    .await
    .expect("the gateway did not start");
    (child, url)
}
