//! SPEC 6 and 9 — connectors: clone, default, keys, provider URLs.

use crate::helpers::spawn_app;
use reqwest::Method;
use serde_json::{Value, json};

#[tokio::test]
async fn a_clone_has_new_keys_the_same_settings_and_teams_and_no_numbers() {
    let app = spawn_app().await;
    let c = app
        .create_connector(
            json!({"name": "Exotel", "timezone": "Asia/Kolkata", "lead_source": "Phone",
            "disposition": {"values": ["A", "B"], "task": {"enabled": true, "mandatory": true}}}),
        )
        .await;
    let team = app
        .admin_post("/api/v1/teams", json!({"name": "North"}))
        .await;
    app.admin(
        Method::PUT,
        &format!("/api/v1/connectors/{}/teams", c.id),
        Some(json!({"team_ids": [team["id"]]})),
    )
    .await;
    app.admin_post(
        &format!("/api/v1/connectors/{}/virtual-numbers", c.id),
        json!({"number": "08069000000"}),
    )
    .await;

    let clone = app
        .admin_post(&format!("/api/v1/connectors/{}/clone", c.id), json!({}))
        .await;

    let original = app.admin_get(&format!("/api/v1/connectors/{}", c.id)).await;
    let settings = |v: &Value| {
        let mut v = v.clone();
        for k in [
            "id",
            "access_key",
            "secret_key",
            "is_default",
            "created_at",
            "updated_at",
        ] {
            v.as_object_mut().unwrap().remove(k);
        }
        v
    };
    assert_eq!(settings(&clone), settings(&original));
    assert_ne!(clone["access_key"], original["access_key"]);
    assert_ne!(clone["secret_key"].as_str().unwrap(), c.secret_key);
    assert_eq!(clone["is_default"], false);
    let t = app
        .admin_get(&format!("/api/v1/teams/{}", team["id"].as_str().unwrap()))
        .await;
    assert_eq!(t["connector_ids"].as_array().unwrap().len(), 2);
    let numbers = app
        .admin_get(&format!(
            "/api/v1/connectors/{}/virtual-numbers",
            clone["id"].as_str().unwrap()
        ))
        .await;
    assert!(numbers["items"].as_array().unwrap().is_empty());

    // the original's keys reach the original, never the clone; mixing them is refused
    app.post_popup(&c, r#"{"CallSessionId":"k1"}"#).await;
    let rows = app.telephony_logs("call_session_id=k1", 1).await;
    assert_eq!(rows[0]["connector_id"], c.id.as_str());
    let mixed = crate::helpers::TestConnector {
        id: clone["id"].as_str().unwrap().to_owned(),
        access_key: clone["access_key"].as_str().unwrap().to_owned(),
        secret_key: c.secret_key.clone(),
    };
    assert_eq!(
        app.post_popup(&mixed, r#"{"CallSessionId":"k2"}"#).await.0,
        401
    );
}

#[tokio::test]
async fn rotated_keys_replace_the_old_ones_at_once() {
    let app = spawn_app().await;
    let c = app.connector().await;
    app.agent("asha@example.com", &["101"]).await;
    // the keys are in use (and so in the gateway's connector cache)
    let (before, _) = app.post_popup(&c, r#"{"SourceNumber":"8611795988","DestinationNumber":"101","Direction":"Inbound","CallSessionId":"c0"}"#).await;
    assert_eq!(before, 200);

    let (status, rotated) = app
        .admin(
            Method::POST,
            &format!("/api/v1/connectors/{}/rotate-keys", c.id),
            None,
        )
        .await;

    assert_eq!(status, 200);
    let (old, _) = app.post_popup(&c, r#"{"SourceNumber":"8611795988","DestinationNumber":"101","Direction":"Inbound","CallSessionId":"c1"}"#).await;
    assert_eq!(old, 401);
    let fresh = crate::helpers::TestConnector {
        id: c.id.clone(),
        access_key: rotated["access_key"].as_str().unwrap().to_owned(),
        secret_key: rotated["secret_key"].as_str().unwrap().to_owned(),
    };
    let (new, _) = app.post_popup(&fresh, r#"{"SourceNumber":"8611795988","DestinationNumber":"101","Direction":"Inbound","CallSessionId":"c1"}"#).await;
    assert_eq!(new, 200);
}

#[tokio::test]
async fn changed_settings_apply_to_the_next_provider_request() {
    let app = spawn_app().await;
    let c = app.connector().await;
    app.agent("asha@example.com", &["101"]).await;
    let body = |s: &str| {
        json!({"SourceNumber": "8611795988", "DestinationNumber": "101", "Direction": "Inbound", "CallSessionId": s})
            .to_string()
    };
    let (status, first) = app.post_popup(&c, &body("c1")).await;
    assert_eq!((status, &first["Message"]["Queued"]), (200, &json!(true)));

    let (status, _) = app
        .admin(
            Method::PATCH,
            &format!("/api/v1/connectors/{}", c.id),
            Some(json!({"popup": {"enabled": false}})),
        )
        .await;
    assert_eq!(status, 200);
    let (_, second) = app.post_popup(&c, &body("c2")).await;

    assert_eq!(second["Message"]["Message"], "Agent popup disabled");
    let (status, _) = app
        .admin(
            Method::DELETE,
            &format!("/api/v1/connectors/{}", c.id),
            None,
        )
        .await;
    assert_eq!(status, 204);
    assert_eq!(
        app.post_popup(&c, &body("c3")).await.0,
        401,
        "deleted keys stop at once"
    );
}

#[tokio::test]
async fn exactly_one_connector_is_the_default_and_deleting_it_promotes_the_oldest() {
    let app = spawn_app().await;
    let first = app.create_connector(json!({"name": "First"})).await;
    let second = app.create_connector(json!({"name": "Second"})).await;
    let third = app.create_connector(json!({"name": "Third"})).await;

    let (status, made) = app
        .admin(
            Method::POST,
            &format!("/api/v1/connectors/{}/default", third.id),
            None,
        )
        .await;
    assert_eq!((status, made["is_default"].clone()), (200, json!(true)));
    let defaults = |list: &Value| -> Vec<String> {
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["is_default"] == true)
            .map(|c| c["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        defaults(&app.admin_get("/api/v1/connectors").await),
        ["Third"]
    );

    let (status, _) = app
        .admin(
            Method::DELETE,
            &format!("/api/v1/connectors/{}", third.id),
            None,
        )
        .await;
    assert_eq!(status, 204);

    assert_eq!(
        defaults(&app.admin_get("/api/v1/connectors").await),
        ["First"]
    );
    let _ = (first, second);
}

#[tokio::test]
async fn provider_urls_carry_the_keys_on_the_public_url() {
    let app = spawn_app_public().await;
    let c = app.connector().await;

    let urls = app
        .admin_get(&format!("/api/v1/connectors/{}/urls", c.id))
        .await;

    assert_eq!(
        urls["urls"]["agent_popup"],
        "https://gw.example.com/v2/Telephony.svc/ShowAgentPopup"
    );
    assert_eq!(
        urls["urls"]["call_log"],
        "https://gw.example.com/v2/Telephony.svc/LogCall"
    );
    assert_eq!(urls["headers"]["x-LSQ-AccessKey"], c.access_key.as_str());
    assert_eq!(urls["headers"]["x-LSQ-SecretKey"], c.secret_key.as_str());
    let with_keys = urls["urls_with_keys"]["call_route"].as_str().unwrap();
    assert!(with_keys.starts_with("https://gw.example.com/api/v1/telephony/call-route?accessKey="));
    assert!(with_keys.contains(&format!("secretKey={}", c.secret_key)));
}

async fn spawn_app_public() -> crate::helpers::TestApp {
    crate::helpers::spawn_app_with(|s| s.server.public_url = "https://gw.example.com/".into()).await
}

#[tokio::test]
async fn a_user_in_the_north_team_sees_only_north_and_a_user_in_no_team_sees_the_default() {
    let app = spawn_app().await;
    let default = app.create_connector(json!({"name": "Default"})).await;
    let north = app.create_connector(json!({"name": "North"})).await;
    let team = app
        .admin_post("/api/v1/teams", json!({"name": "North team"}))
        .await;
    app.admin(
        Method::PUT,
        &format!("/api/v1/connectors/{}/teams", north.id),
        Some(json!({"team_ids": [team["id"]]})),
    )
    .await;
    let n = app.admin_post("/api/v1/users", json!({"name": "N", "email": "n@example.com", "phone_numbers": ["101"], "team_ids": [team["id"]]})).await;
    let (_, nobody) = app.agent("x@example.com", &["102"]).await;
    let north_token = app
        .admin_post(
            &format!("/api/v1/users/{}/tokens", n["id"].as_str().unwrap()),
            json!({}),
        )
        .await;
    let mine = |token: String| {
        let app = &app;
        async move {
            let v: Value = app
                .client
                .get(app.url("/api/v1/me/connectors"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            v["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["name"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };

    assert_eq!(
        mine(north_token["token"].as_str().unwrap().to_owned()).await,
        ["North"]
    );
    assert_eq!(mine(nobody).await, ["Default"]);
    // a popup through the default connector does not reach the north agent
    let (status, out) = app
        .post_popup(&default, r#"{"SourceNumber":"8611795988","DestinationNumber":"101","Direction":"Inbound","CallSessionId":"c1"}"#)
        .await;
    assert_eq!(
        (status, out["ExceptionType"].as_str().unwrap()),
        (422, "AgentNotFound")
    );
}

#[tokio::test]
async fn telephony_logs_filter_paginate_and_are_pruned_by_count() {
    let app = crate::helpers::spawn_app_with(|s| s.telephony_log.max_rows = 3).await;
    let c = app.connector().await;
    for i in 0..5 {
        app.post_popup(&c, &format!(r#"{{"CallSessionId":"s{i}"}}"#))
            .await;
    }
    let all = app.telephony_logs("limit=500", 5).await;
    assert!(all.iter().all(|r| !r.to_string().contains(&c.secret_key)));

    let first = app
        .admin_get("/api/v1/telephony-logs?limit=2&endpoint=agent_popup")
        .await;
    assert_eq!(first["items"].as_array().unwrap().len(), 2);
    let next = first["next_cursor"].as_str().unwrap();
    let second = app
        .admin_get(&format!(
            "/api/v1/telephony-logs?limit=2&endpoint=agent_popup&cursor={next}"
        ))
        .await;
    assert_eq!(second["items"][0]["call_session_id"], "s2");
    assert_eq!(first["items"][0]["call_session_id"], "s4", "newest first");
    let one = app
        .admin_get("/api/v1/telephony-logs?call_session_id=s1")
        .await;
    assert_eq!(one["items"].as_array().unwrap().len(), 1);
    for (query, field) in [("endpoint=popup", "endpoint"), ("outcome=error", "outcome")] {
        let (status, out) = app
            .admin(
                Method::GET,
                &format!("/api/v1/telephony-logs?{query}"),
                None,
            )
            .await;
        assert_eq!((status, &out["error"]["field"]), (422, &json!(field)));
    }

    let pruned = utc_gateway::service::tlog::prune(&app.state).await.unwrap();

    assert_eq!(pruned, 2);
    let kept: Vec<String> = app.admin_get("/api/v1/telephony-logs").await["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["call_session_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(kept, ["s4", "s3", "s2"]);
}
