//! Scale-out (SPEC 7): several real gateway nodes sharing one real PostgreSQL database
//! (whatever `UTC_TEST_STORE` says: clustering requires it) and one real Redis (a
//! `redis-server` of the test's own, so it can be stopped and restarted).

use crate::helpers::{AgentSocket, Seen, TestApp, TestConnector, WAIT, start_node};
use serde_json::{Value, json};
use std::time::Duration;

/// A `redis-server` on a free port, keeping nothing on disk.
pub struct TestRedis {
    pub port: u16,
    child: Option<std::process::Child>,
}

impl TestRedis {
    pub async fn start() -> TestRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut r = TestRedis { port, child: None };
        r.resume().await;
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts the server again on the same port.
    pub async fn resume(&mut self) {
        let child = std::process::Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server must be installed");
        self.child = Some(child);
        let addr = format!("127.0.0.1:{}", self.port);
        tokio::time::timeout(WAIT, async {
            while tokio::net::TcpStream::connect(&addr).await.is_err() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("redis-server did not start");
    }

    /// Kills the server (as a crash would).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A cluster: one Redis, one shared store, `n` nodes named a, b, c…
pub struct Cluster {
    pub redis: TestRedis,
    pub nodes: Vec<TestApp>,
    pub connector: TestConnector,
    /// Last, so the database is dropped after the nodes stopped using it.
    pub _store: crate::helpers::TestStore,
}

impl Cluster {
    pub async fn start(n: usize) -> Cluster {
        let redis = TestRedis::start().await;
        let mut nodes = Vec::new();
        let store = crate::helpers::TestStore::postgres().await;
        for i in 0..n {
            let name = format!("node-{}", char::from(b'a' + u8::try_from(i).unwrap()));
            nodes.push(start_node(&store, &redis.url(), &name, 3).await);
        }
        let connector = nodes[0].connector().await;
        Cluster {
            redis,
            _store: store,
            nodes,
            connector,
        }
    }

    /// Waits until `node` counts `sockets` sockets of `user` across the cluster.
    pub async fn wait_presence(&self, node: usize, user: &str, sockets: usize) {
        let id = utc_gateway::domain::ids::UserId::parse(user).unwrap();
        let bus = self.nodes[node].state.bus.clone();
        tokio::time::timeout(WAIT * 2, async {
            while bus.sockets_of(id).await != sockets {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("node {node} never saw {sockets} sockets of the user"));
    }

    /// Waits until `node`'s `/readyz` reports `status`.
    pub async fn wait_ready(&self, node: usize, status: &str) -> Value {
        let app = &self.nodes[node];
        tokio::time::timeout(WAIT * 2, async {
            loop {
                let res = app.client.get(app.url("/readyz")).send().await.unwrap();
                let code = res.status().as_u16();
                let body: Value = res.json().await.unwrap();
                if body["status"] == status {
                    assert_eq!(code, 200, "{body}");
                    return body;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("node {node} never became {status}"))
    }
}

fn popup_body(session: &str) -> String {
    json!({"SourceNumber": "08611795988", "DestinationNumber": "101", "Direction": "Inbound", "CallSessionId": session}).to_string()
}

/// The popup frames a socket has seen (by popup id), after a ping round trip.
async fn popups_seen(s: &mut AgentSocket) -> Vec<String> {
    s.drain()
        .await
        .iter()
        .filter(|f| f["type"] == "popup")
        .map(|f| f["popup"]["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn next_popup(s: &mut AgentSocket) -> Value {
    loop {
        match s.next().await {
            Seen::Frame(f) if f["type"] == "popup" => return f,
            Seen::Frame(_) => {}
            Seen::Closed(c) => panic!("closed: {c:?}"),
        }
    }
}

#[tokio::test]
async fn an_agent_on_node_a_receives_a_popup_posted_to_node_b() {
    let c = Cluster::start(2).await;
    let (user, token) = c.nodes[0].agent("asha@example.com", &["101"]).await;
    let (mut socket, _) = c.nodes[0].agent_socket(&token, None).await;
    c.wait_presence(1, &user, 1).await;

    let (status, out) = c.nodes[1]
        .post_popup(&c.connector, &popup_body("x-1"))
        .await;

    assert_eq!(status, 200, "{out}");
    assert_eq!(out["Message"]["Delivered"], 1);
    assert_eq!(out["Message"]["Queued"], false);
    let frame = next_popup(&mut socket).await;
    assert_eq!(frame["popup"]["id"], out["Message"]["Id"]);
    assert_eq!(frame["popup"]["call"]["call_session_id"], "x-1");
    // the node that wrote it marks it delivered in the shared store
    let popup =
        utc_gateway::domain::ids::PopupId::parse(out["Message"]["Id"].as_str().unwrap()).unwrap();
    tokio::time::timeout(WAIT, async {
        loop {
            let p = c.nodes[1]
                .state
                .store
                .get_popup(popup)
                .await
                .unwrap()
                .unwrap();
            if p.state != utc_gateway::store::PopupState::Queued {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the popup stayed queued");
}

#[tokio::test]
async fn an_agent_with_tabs_on_two_nodes_gets_the_popup_once_on_each() {
    let c = Cluster::start(2).await;
    let (user, token) = c.nodes[0].agent("asha@example.com", &["101"]).await;
    let (mut on_a, _) = c.nodes[0].agent_socket(&token, None).await;
    let (mut on_b, _) = c.nodes[1].agent_socket(&token, None).await;
    c.wait_presence(0, &user, 2).await;
    c.wait_presence(1, &user, 2).await;

    let out = c.nodes[1]
        .popup(&c.connector, "08611795988", "101", "x-2")
        .await;

    assert_eq!(out["Delivered"], 2);
    let id = out["Id"].as_str().unwrap().to_owned();
    for s in [&mut on_a, &mut on_b] {
        let first = next_popup(s).await;
        assert_eq!(first["popup"]["id"], id.as_str());
        assert_eq!(popups_seen(s).await, Vec::<String>::new(), "a second copy");
    }
}

#[tokio::test]
async fn an_offline_agents_queued_popup_is_delivered_once_when_they_connect_to_a_third_node() {
    let c = Cluster::start(3).await;
    let (_user, token) = c.nodes[0].agent("asha@example.com", &["101"]).await;

    let out = c.nodes[0]
        .popup(&c.connector, "08611795988", "101", "x-3")
        .await;
    assert_eq!(out["Delivered"], 0);
    assert_eq!(out["Queued"], true);
    let (mut on_c, ready) = c.nodes[2].agent_socket(&token, None).await;

    let first = next_popup(&mut on_c).await;
    assert_eq!(first["popup"]["id"], out["Id"]);
    assert_eq!(
        first["seq"], ready["seq"],
        "the replayed popup keeps its seq"
    );
    assert_eq!(popups_seen(&mut on_c).await, Vec::<String>::new());
    // a second tab on node b gets it once too (open popups replay per socket)
    let (mut on_b, _) = c.nodes[1].agent_socket(&token, None).await;
    assert_eq!(
        popups_seen(&mut on_b).await,
        vec![out["Id"].as_str().unwrap().to_owned()]
    );
}

#[tokio::test]
async fn without_redis_a_node_serves_its_own_sockets_and_resumes_cross_node_delivery_when_it_returns()
 {
    let mut c = Cluster::start(2).await;
    let (user, token) = c.nodes[0].agent("asha@example.com", &["101"]).await;
    let (ravi, token2) = c.nodes[0].agent("ravi@example.com", &["102"]).await;
    let (mut asha_on_a, _) = c.nodes[0].agent_socket(&token, None).await;
    let (mut ravi_on_b, _) = c.nodes[1].agent_socket(&token2, None).await;
    c.wait_presence(0, &user, 1).await;
    c.wait_ready(0, "ready").await;

    c.redis.stop();
    let degraded = c.wait_ready(0, "degraded").await;
    assert_eq!(degraded["redis"], "down");
    assert_eq!(degraded["store"], "ok");
    c.wait_ready(1, "degraded").await;

    // a local agent still gets popups at once
    let local = c.nodes[0]
        .popup(&c.connector, "08611795988", "101", "down-1")
        .await;
    assert_eq!(local["Delivered"], 1);
    assert_eq!(next_popup(&mut asha_on_a).await["popup"]["id"], local["Id"]);
    // an agent on the other node cannot be reached: the popup is stored queued
    let remote = c.nodes[0]
        .popup(&c.connector, "08611795989", "102", "down-2")
        .await;
    assert_eq!(remote["Delivered"], 0);
    assert_eq!(remote["Queued"], true);
    assert_eq!(remote["Message"], "Queued for agent");
    assert_eq!(popups_seen(&mut ravi_on_b).await, Vec::<String>::new());

    c.redis.resume().await;
    c.wait_ready(0, "ready").await;
    c.wait_ready(1, "ready").await;

    // node b re-sends the popup that was queued for its agent, once
    let resent = next_popup(&mut ravi_on_b).await;
    assert_eq!(resent["popup"]["id"], remote["Id"]);
    // and cross-node delivery works again
    c.wait_presence(0, &ravi, 1).await;
    let again = c.nodes[0]
        .popup(&c.connector, "08611795990", "102", "up-1")
        .await;
    assert_eq!(again["Delivered"], 1);
    assert_eq!(next_popup(&mut ravi_on_b).await["popup"]["id"], again["Id"]);
    assert_eq!(popups_seen(&mut ravi_on_b).await, Vec::<String>::new());
}

#[tokio::test]
async fn deactivating_a_user_closes_their_sockets_on_every_node() {
    let c = Cluster::start(2).await;
    let (user, token) = c.nodes[0].agent("asha@example.com", &["101"]).await;
    let (mut on_b, _) = c.nodes[1].agent_socket(&token, None).await;
    c.wait_presence(0, &user, 1).await;

    let (status, _) = c.nodes[0]
        .admin(
            reqwest::Method::PATCH,
            &format!("/api/v1/users/{user}"),
            Some(json!({"active": false})),
        )
        .await;

    assert_eq!(status, 200);
    assert_eq!(on_b.expect_close().await, Some(4403));
}

#[tokio::test]
async fn call_route_reports_an_owner_online_on_another_node() {
    let c = Cluster::start(2).await;
    let (user, token) = c.nodes[0].agent("asha@example.com", &["101"]).await;
    c.nodes[0]
        .create_lead(json!({"first_name": "Meera", "phone": "8611795988", "owner_id": user}))
        .await;
    let route = |node: usize| {
        let app = &c.nodes[node];
        let url = app.url(&format!(
            "/api/v1/telephony/call-route?caller_id=08611795988&accessKey={}&secretKey={}",
            c.connector.access_key, c.connector.secret_key
        ));
        async move {
            let v: Value = app
                .client
                .get(url)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            v
        }
    };
    assert_eq!(route(1).await["Online"], false);

    let (_socket, _) = c.nodes[0].agent_socket(&token, None).await;
    c.wait_presence(1, &user, 1).await;

    assert_eq!(route(1).await["Online"], true);
}

#[tokio::test]
async fn killing_a_node_removes_its_agents_from_presence_within_the_ttl() {
    let store = crate::helpers::TestStore::postgres().await;
    let redis = TestRedis::start().await;
    let a = start_node(&store, &redis.url(), "node-a", 2).await;
    let connector = a.connector().await;
    let (user, token) = a.agent("asha@example.com", &["101"]).await;
    let cluster = [
        ("UTC__CLUSTER__REDIS_URL", redis.url()),
        ("UTC__CLUSTER__NODE_ID", "node-k".to_owned()),
        ("UTC__CLUSTER__PRESENCE_TTL_SECS", "2".to_owned()),
    ];
    let k_store = store.shared();
    let (mut child, url) = crate::helpers::start_binary(&k_store, "admin-cluster", &cluster).await;
    let ws_url = format!("{}/ws", url.replacen("http", "ws", 1));
    let (ws, _) = tokio_tungstenite::connect_async(ws_url).await.unwrap();
    let mut socket = AgentSocket { ws };
    socket
        .send(json!({"type": "auth", "token": token, "since": null}))
        .await;
    socket.expect("ready").await;
    let c = Cluster {
        redis,
        _store: store,
        nodes: vec![a],
        connector,
    };
    c.wait_presence(0, &user, 1).await;
    let seen = c.nodes[0]
        .popup(&c.connector, "08611795988", "101", "k-1")
        .await;
    assert_eq!(
        seen["Delivered"], 1,
        "a popup posted to a reaches the socket on k"
    );

    child.kill().await.unwrap(); // SIGKILL: no goodbye to Redis

    c.wait_presence(0, &user, 0).await;
    let after = c.nodes[0]
        .popup(&c.connector, "08611795988", "101", "k-2")
        .await;
    assert_eq!(after["Delivered"], 0);
    assert_eq!(after["Queued"], true);
}

#[tokio::test]
async fn a_node_that_joins_is_counted_by_the_others_at_once_not_at_their_next_refresh() {
    // Arrange: presence refreshed only every 30 s; node a is up before node b starts
    let redis = TestRedis::start().await;
    let store = crate::helpers::TestStore::postgres().await;
    let a = start_node(&store, &redis.url(), "node-a", 90).await;
    let connector = a.connector().await;
    let (user, token) = a.agent("asha@example.com", &["101"]).await;
    let mut c = Cluster {
        redis,
        nodes: vec![a],
        connector,
        _store: store,
    };
    c.wait_ready(0, "ready").await;
    c.nodes
        .push(start_node(&c._store, &c.redis.url(), "node-b", 90).await);
    c.wait_ready(1, "ready").await;

    // Act: the agent connects to the new node
    let (mut on_b, _) = c.nodes[1].agent_socket(&token, None).await;

    // Assert: node a counts that socket long before its next refresh
    c.wait_presence(0, &user, 1).await;
    let out = c.nodes[0]
        .popup(&c.connector, "08611795988", "101", "join-1")
        .await;
    assert_eq!(out["Delivered"], 1);
    assert_eq!(next_popup(&mut on_b).await["popup"]["id"], out["Id"]);
}
