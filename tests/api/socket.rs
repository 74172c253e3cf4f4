//! SPEC 3 — agent sockets: authentication, replay, limits, slow consumers.

use crate::helpers::{Seen, spawn_app, spawn_app_with};
use futures_util::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn a_bad_token_or_a_first_frame_that_is_not_auth_closes_with_4401() {
    let app = spawn_app().await;

    let mut bad = app.raw_socket().await;
    bad.send(json!({"type": "auth", "token": "not-a-jwt"}))
        .await;
    assert_eq!(bad.expect_close().await, Some(4401));

    let mut rude = app.raw_socket().await;
    rude.send(json!({"type": "ping"})).await;
    assert_eq!(rude.expect_close().await, Some(4401));
}

#[tokio::test]
async fn ready_carries_the_user_and_the_connectors_they_see() {
    let app = spawn_app().await;
    let c = app.connector().await;
    app.sales_number(&c).await;
    let (id, token) = app.agent("asha@example.com", &["101"]).await;

    let (_, ready) = app.agent_socket(&token, None).await;

    assert_eq!(ready["user"]["id"], id.as_str());
    assert_eq!(ready["seq"], 0);
    assert_eq!(ready["connectors"][0]["id"], c.id.as_str());
    assert_eq!(
        ready["connectors"][0]["virtual_numbers"][0]["number"],
        "+918069000000"
    );
    assert_eq!(ready["connectors"][0]["virtual_numbers"][0]["tag"], "Sales");
    assert!(ready["connectors"][0].get("secret_key").is_none());
}

#[tokio::test]
async fn an_inactive_user_is_refused_and_deactivation_closes_open_sockets_with_4403() {
    let app = spawn_app().await;
    let (id, token) = app.agent("asha@example.com", &["101"]).await;
    let (mut open, _) = app.agent_socket(&token, None).await;

    let (status, _) = app
        .admin(
            reqwest::Method::PATCH,
            &format!("/api/v1/users/{id}"),
            Some(json!({"active": false})),
        )
        .await;
    assert_eq!(status, 200);

    assert_eq!(open.expect_close().await, Some(4403));
    let mut again = app.raw_socket().await;
    again.send(json!({"type": "auth", "token": token})).await;
    assert_eq!(again.expect_close().await, Some(4403));
    let res = app
        .client
        .get(app.url("/api/v1/me"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 403);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "user_inactive");
}

#[tokio::test]
async fn a_reconnect_with_since_replays_only_the_events_after_it() {
    let app = spawn_app().await;
    let c = app.connector().await;
    let (_, token) = app.agent("asha@example.com", &["101"]).await;
    let (mut tab, _) = app.agent_socket(&token, None).await;
    app.popup(&c, "8611795988", "101", "c1").await;
    let first = tab.expect("popup").await;
    let k = first["seq"].as_i64().unwrap();
    drop(tab);

    let second = app.popup(&c, "9000000001", "101", "c2").await;
    let (mut again, ready) = app.agent_socket(&token, Some(k)).await;

    assert_eq!(ready["seq"], k + 1);
    let f = again.expect("popup").await;
    assert_eq!(f["popup"]["id"], second["Id"]);
    assert_eq!(f["seq"], k + 1);
    assert!(
        again.drain().await.is_empty(),
        "c1's popup was already seen"
    );

    // a fresh page (since null) gets every open popup, oldest first
    let (mut fresh, _) = app.agent_socket(&token, None).await;
    assert_eq!(
        fresh.expect("popup").await["popup"]["id"],
        first["popup"]["id"]
    );
    assert_eq!(fresh.expect("popup").await["popup"]["id"], second["Id"]);
}

#[tokio::test]
async fn pings_get_pongs_and_bad_frames_get_errors() {
    let app = spawn_app().await;
    let (_, token) = app.agent("asha@example.com", &["101"]).await;
    let (mut tab, _) = app.agent_socket(&token, None).await;

    tab.send(json!({"type": "dance"})).await;
    let e = tab.expect("error").await;
    assert_eq!(e["error"]["code"], "unknown_type");
    tab.ws.send(Message::Text("not json".into())).await.unwrap();
    assert_eq!(tab.expect("error").await["error"]["code"], "invalid_json");
    tab.send(json!({"type": "dispose", "popup_id": "x"})).await;
    assert_eq!(tab.expect("error").await["error"]["code"], "invalid_req");
    tab.send(json!({"type": "ping"})).await;
    tab.expect("pong").await;
}

#[tokio::test]
async fn too_many_sockets_for_one_user_closes_the_newest_with_4429() {
    let app = spawn_app_with(|s| s.ws.max_sockets_per_user = 2).await;
    let (_, token) = app.agent("asha@example.com", &["101"]).await;
    let _a = app.agent_socket(&token, None).await;
    let _b = app.agent_socket(&token, None).await;

    let mut third = app.raw_socket().await;
    third.send(json!({"type": "auth", "token": token})).await;

    assert_eq!(third.expect_close().await, Some(4429));
}

#[tokio::test]
async fn past_the_node_socket_cap_an_upgrade_is_refused_with_503() {
    let app = spawn_app_with(|s| s.ws.max_sockets = 2).await;
    let (_, asha) = app.agent("asha@example.com", &["101"]).await;
    let (_, ravi) = app.agent("ravi@example.com", &["102"]).await;
    let _a = app.agent_socket(&asha, None).await;
    let _b = app.agent_socket(&ravi, None).await;

    let refused = tokio_tungstenite::connect_async(format!("ws://{}/ws", app.addr)).await;

    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
            assert_eq!(res.status().as_u16(), 503);
            let body: serde_json::Value =
                serde_json::from_slice(res.body().as_deref().unwrap_or_default()).unwrap();
            assert_eq!(body["error"]["code"], "unavailable");
        }
        other => panic!("expected a 503 answer to the upgrade, got {other:?}"),
    }
    drop(_a);
    // once a socket is gone, the next one gets in
    tokio::time::timeout(crate::helpers::WAIT, async {
        loop {
            if tokio_tungstenite::connect_async(format!("ws://{}/ws", app.addr))
                .await
                .is_ok()
            {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("a freed slot is reused");
}

#[tokio::test]
async fn a_client_frame_over_the_size_limit_closes_the_socket_with_1008() {
    let app = spawn_app_with(|s| s.ws.max_message_bytes = 1024).await;
    let (_, token) = app.agent("asha@example.com", &["101"]).await;
    let (mut tab, _) = app.agent_socket(&token, None).await;

    tab.send(json!({"type": "ping", "pad": "x".repeat(4096)}))
        .await;

    assert_eq!(tab.expect_close().await, Some(1008));
}

#[tokio::test]
async fn a_browser_from_a_foreign_origin_may_not_open_a_socket() {
    let app = spawn_app().await;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = format!("ws://{}/ws", app.addr)
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("Origin", "https://evil.example".parse().unwrap());

    let err = tokio_tungstenite::connect_async(req).await.unwrap_err();

    match err {
        tokio_tungstenite::tungstenite::Error::Http(res) => assert_eq!(res.status().as_u16(), 403),
        other => panic!("expected a 403, got {other}"),
    }
}

#[tokio::test]
async fn a_socket_that_never_reads_is_closed_while_another_agent_still_receives_popups() {
    // Arrange: big popups (a lead with 60 KiB of fields) and a small queue
    let app = spawn_app_with(|s| {
        s.ws.queue_capacity = 4;
        s.server.max_body_bytes = 1 << 20;
        s.limits.provider_rate_per_sec = 1_000_000;
        s.limits.provider_burst = 1_000_000;
    })
    .await;
    let c = app.connector().await;
    app.agent("slow@example.com", &["101"]).await;
    let (_, fast_token) = app.agent("fast@example.com", &["102"]).await;
    let slow_token = app
        .admin_post(
            &format!(
                "/api/v1/users/{}/tokens",
                user_id(&app, "slow@example.com").await
            ),
            json!({}),
        )
        .await;
    let big = app
        .create_lead(json!({"first_name": "Big", "phone": "9000000009", "fields": {"notes": "x".repeat(60 * 1024)}}))
        .await;
    let mut slow = app.raw_socket().await;
    slow.send(json!({"type": "auth", "token": slow_token["token"]}))
        .await; // and never read again
    let (mut fast, _) = app.agent_socket(&fast_token, None).await;

    // Act: keep popping up the slow agent until the gateway gives up on that socket
    let mut delivered_to_slow = usize::MAX;
    for i in 0..2000 {
        let body = json!({"LeadId": big, "DestinationNumber": "101", "Direction": "Inbound", "CallSessionId": format!("s{i}")});
        let (status, out) = app.post_popup(&c, &body.to_string()).await;
        assert_eq!(status, 200, "{out}");
        delivered_to_slow = out["Message"]["Delivered"].as_u64().unwrap() as usize;
        if delivered_to_slow == 0 {
            break;
        }
    }

    // Assert
    assert_eq!(delivered_to_slow, 0, "the slow socket was never closed");
    let answer = app.popup(&c, "8611795988", "102", "fast-1").await;
    assert_eq!(answer["Delivered"], 1);
    match fast.next().await {
        Seen::Frame(f) => assert_eq!(f["popup"]["id"], answer["Id"]),
        Seen::Closed(c) => panic!("the healthy socket was closed: {c:?}"),
    }
}

async fn user_id(app: &crate::helpers::TestApp, email: &str) -> String {
    let users = app.admin_get("/api/v1/users").await;
    users["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["email"] == email)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn a_silent_socket_is_closed_with_4408() {
    // no pings within the idle window, so the client has nothing to answer
    let app = spawn_app_with(|s| {
        s.ws.heartbeat_secs = 3600;
        s.ws.idle_timeout_secs = 1;
    })
    .await;
    let (_, token) = app.agent("asha@example.com", &["101"]).await;
    let (mut tab, _) = app.agent_socket(&token, None).await;

    assert_eq!(tab.expect_close().await, Some(4408));
}

#[tokio::test]
async fn a_popup_queued_past_its_ttl_expires_and_connected_tabs_hear_of_it() {
    let app = spawn_app_with(|s| {
        s.popup.ttl_secs = 1;
        s.popup.open_max_secs = 2;
    })
    .await;
    let c = app.connector().await;
    let (_, token) = app.agent("asha@example.com", &["101"]).await;
    let (mut tab, _) = app.agent_socket(&token, None).await;

    let answer = app.popup(&c, "8611795988", "101", "c1").await;
    tab.expect("popup").await;

    let closed = tab.expect("popup_closed").await;
    assert_eq!(closed["popup_id"], answer["Id"]);
    assert_eq!(closed["reason"], "expired");
    let again = app.popup(&c, "8611795988", "101", "c1").await;
    assert_eq!(again["Id"], answer["Id"]);
    assert_eq!(
        (again["Delivered"].clone(), again["Queued"].clone()),
        (json!(0), json!(false))
    );
}
