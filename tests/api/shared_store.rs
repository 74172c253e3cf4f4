//! Two nodes on one store (DESIGN.md: the store enforces uniqueness and idempotency
//! atomically, on any node): two gateways with their own pools on the same database,
//! driven concurrently. Meant for PostgreSQL (`UTC_TEST_STORE=postgres`), where nodes
//! really are separate; they also run on SQLite, two pools on one file.

use crate::helpers::{FakeProvider, TestApp, WAIT, spawn_app, spawn_app_with};
use futures_util::future::join_all;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use utc_gateway::domain::ids::{ConnectorId, UserId};
use utc_gateway::domain::time::Timestamp;

const JSON: &str = "application/json";

fn call_log(session: &str) -> Value {
    json!({
        "SourceNumber": "8611795988", "DestinationNumber": "101", "DisplayNumber": "8069000000",
        "StartTime": "2017-07-07 18:26:38", "EndTime": "2017-07-07 18:28:38",
        "CallDuration": 120, "Status": "Answered", "Direction": "Inbound", "CallSessionId": session,
    })
}

fn popup(session: &str) -> String {
    json!({"SourceNumber": "8611795988", "DestinationNumber": "101", "Direction": "Inbound", "CallSessionId": session})
        .to_string()
}

/// Two nodes on one database, a connector and the agent on extension 101.
async fn two_nodes_and_an_agent() -> ([TestApp; 2], crate::helpers::TestConnector, UserId) {
    let first = spawn_app().await;
    let nodes = [first.second_node().await, first];
    let c = nodes[0].connector().await;
    let (agent, _) = nodes[0].agent("asha@example.com", &["101"]).await;
    let agent = UserId::parse(&agent).unwrap();
    (nodes, c, agent)
}

/// Node `i % 2` of the two.
fn node(nodes: &[TestApp; 2], i: usize) -> &TestApp {
    &nodes[i % 2]
}

#[tokio::test]
async fn twenty_concurrent_popups_and_logs_for_one_unknown_caller_on_two_nodes_make_one_lead() {
    // Arrange
    let (nodes, c, _) = two_nodes_and_an_agent().await;

    // Act
    let answers = join_all((0..20).map(|i| {
        let (node, c) = (node(&nodes, i), &c);
        async move {
            let session = format!("call-{i}");
            if i % 4 < 2 {
                node.post_popup(c, &popup(&session)).await
            } else {
                node.post_call_log(c, &call_log(&session).to_string(), JSON)
                    .await
            }
        }
    }))
    .await;

    // Assert
    let leads: BTreeSet<_> = answers
        .iter()
        .map(|(status, out)| {
            assert_eq!(*status, 200, "{out}");
            out["Message"]["LeadId"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(
        leads.len(),
        1,
        "every request found the same lead: {leads:?}"
    );
    assert_eq!(nodes[0].lead_count().await, 1);
}

#[tokio::test]
async fn the_same_call_logged_concurrently_on_two_nodes_makes_one_activity() {
    // Arrange
    let (nodes, c, _) = two_nodes_and_an_agent().await;
    let body = call_log("same-call").to_string();

    // Act
    let answers = join_all((0..10).map(|i| node(&nodes, i).post_call_log(&c, &body, JSON))).await;

    // Assert
    let ids: BTreeSet<_> = answers
        .iter()
        .map(|(status, out)| {
            assert_eq!(*status, 200, "{out}");
            out["Message"]["Id"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    let firsts = answers
        .iter()
        .filter(|(_, out)| out["Message"]["Duplicate"] == false)
        .count();
    assert_eq!(firsts, 1, "exactly one log was not a duplicate");
    let lead = answers[0].1["Message"]["LeadId"].as_str().unwrap();
    assert_eq!(nodes[1].activities(lead).await.len(), 1);
}

#[tokio::test]
async fn seq_values_handed_out_by_two_nodes_to_one_agent_are_unique_and_gapless() {
    // Arrange
    let (nodes, c, agent) = two_nodes_and_an_agent().await;

    // Act
    let answers = join_all((0..20).map(|i| {
        let (node, c) = (node(&nodes, i), &c);
        async move { node.post_popup(c, &popup(&format!("call-{i}"))).await }
    }))
    .await;

    // Assert
    for (status, out) in &answers {
        assert_eq!(*status, 200, "{out}");
    }
    let store = &nodes[0].state.store;
    let seqs: Vec<i64> = store
        .events_since(agent, 0)
        .await
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(seqs, (1..=20).collect::<Vec<_>>());
    assert_eq!(nodes[1].state.store.current_seq(agent).await.unwrap(), 20);
}

#[tokio::test]
async fn two_nodes_claiming_outbox_items_concurrently_never_claim_the_same_item() {
    // Arrange: twelve forwarded dispositions, each tried once by a worker and failed,
    // next due in ten minutes (the workers leave them alone meanwhile)
    let provider = FakeProvider::start(vec![(503, "down")]).await;
    let first = spawn_app_with(|s| s.outbox.initial_backoff_ms = 600_000).await;
    let nodes = [first.second_node().await, first];
    let c = nodes[0]
        .create_connector(
            json!({"name": "Exotel", "disposition": {"values": ["Interested"], "forward": {
            "url": provider.url("/dispositions"), "method": "POST", "body": r#"{"value":"@dispositionValue"}"#}}}),
        )
        .await;
    let (_, token) = nodes[0].agent("asha@example.com", &["101"]).await;
    for i in 0..12 {
        let popup = nodes[i % 2]
            .popup(&c, "8611795988", "101", &format!("call-{i}"))
            .await;
        let res = nodes[(i + 1) % 2]
            .client
            .post(nodes[(i + 1) % 2].url("/api/v1/dispositions"))
            .bearer_auth(&token)
            .json(&json!({"popup_id": popup["Id"], "value": "Interested"}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 200);
    }
    tokio::time::timeout(WAIT, async {
        loop {
            let items = nodes[0].admin_get("/api/v1/outbox?status=pending").await["items"]
                .as_array()
                .unwrap()
                .clone();
            if items.len() == 12 && items.iter().all(|i| !i["last_error"].is_null()) {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("every item was tried once");
    let connector = ConnectorId::parse(&c.id).unwrap();
    let later = Timestamp::now().plus_secs(3600);

    // Act: each node claims two at a time until nothing is left
    let claims = join_all(nodes.iter().map(|n| async move {
        let mut claimed = Vec::new();
        loop {
            let batch = n
                .state
                .store
                .claim_outbox(connector, 2, later, 30)
                .await
                .unwrap();
            if batch.is_empty() {
                return claimed;
            }
            claimed.extend(batch.into_iter().map(|item| item.id.to_string()));
        }
    }))
    .await;

    // Assert
    let all: Vec<&String> = claims.iter().flatten().collect();
    let unique: BTreeSet<&String> = all.iter().copied().collect();
    assert_eq!(all.len(), 12, "every item claimed once: {claims:?}");
    assert_eq!(unique.len(), 12, "no item claimed twice: {claims:?}");
}

#[tokio::test]
async fn two_nodes_expiring_popups_concurrently_close_each_popup_once() {
    // Arrange: ten queued popups (the agent has no socket)
    let (nodes, c, agent) = two_nodes_and_an_agent().await;
    for i in 0..10 {
        nodes[i % 2]
            .popup(&c, "8611795988", "101", &format!("call-{i}"))
            .await;
    }
    let later = Timestamp::now().plus_secs(3600);
    let closed: fn(_) -> _ = |_| json!({"reason": "expired"});

    // Act
    let expired = join_all(
        nodes
            .iter()
            .map(|n| n.state.store.expire_popups(later, later, closed)),
    )
    .await;

    // Assert
    let popups: Vec<String> = expired
        .into_iter()
        .flat_map(Result::unwrap)
        .map(|e| e.popup_id.to_string())
        .collect();
    let unique: BTreeSet<&String> = popups.iter().collect();
    assert_eq!((popups.len(), unique.len()), (10, 10), "{popups:?}");
    let store = &nodes[0].state.store;
    assert!(store.open_popups(agent).await.unwrap().is_empty());
    let seqs: Vec<i64> = store
        .events_since(agent, 0)
        .await
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    // the ten popups' own events are no longer replayed (closed); the closings are
    assert_eq!(seqs, (11..=20).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_key_rotated_or_a_connector_deleted_on_one_node_stops_working_on_the_other() {
    if !crate::helpers::on_postgres() {
        return; // nodes share PostgreSQL; SQLite is one node's store (cluster needs PostgreSQL)
    }
    // Arrange: node b has served (and so cached) the connector
    let (nodes, c, _) = two_nodes_and_an_agent().await;
    let (status, _) = nodes[1].post_popup(&c, &popup("before")).await;
    assert_eq!(status, 200);

    // Act: node a rotates the keys
    let (status, rotated) = nodes[0]
        .admin(
            reqwest::Method::POST,
            &format!("/api/v1/connectors/{}/rotate-keys", c.id),
            None,
        )
        .await;
    assert_eq!(status, 200, "{rotated}");

    // Assert: node b refuses the old keys (once the change reached it) and takes the new
    tokio::time::timeout(WAIT, async {
        while nodes[1].post_popup(&c, &popup("old-keys")).await.0 != 401 {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("node b kept accepting the rotated keys");
    let fresh = crate::helpers::TestConnector {
        id: c.id.clone(),
        access_key: rotated["access_key"].as_str().unwrap().to_owned(),
        secret_key: rotated["secret_key"].as_str().unwrap().to_owned(),
    };
    assert_eq!(nodes[1].post_popup(&fresh, &popup("new-keys")).await.0, 200);

    // and a deleted connector's keys stop on the other node too
    let (status, _) = nodes[0]
        .admin(
            reqwest::Method::DELETE,
            &format!("/api/v1/connectors/{}", c.id),
            None,
        )
        .await;
    assert_eq!(status, 204);
    tokio::time::timeout(WAIT, async {
        while nodes[1].post_popup(&fresh, &popup("deleted")).await.0 != 401 {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("node b kept accepting a deleted connector's keys");
}
