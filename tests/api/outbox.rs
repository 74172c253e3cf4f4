//! SPEC 4 — disposition forwarding through the durable outbox, against a real local
//! HTTP server playing the provider.

use crate::helpers::{FakeProvider, TestApp, outbox_item, spawn_app_with};
use serde_json::{Value, json};

fn forward(provider: &FakeProvider) -> Value {
    json!({"name": "Exotel", "disposition": {"values": ["Interested"], "forward": {
        "url": provider.url("/dispositions?key=abc"), "method": "POST",
        "headers": {"X-Api-Key": "provider-secret-header"},
        "body": r#"{"value":"@dispositionValue","session":"@callSessionId","notes":"@notes","lead":"@leadId","agent":"@agentEmail"}"#}}})
}

/// Creates the connector, an agent, an open popup, and disposes it over HTTP.
async fn dispose_one(app: &TestApp, provider: &FakeProvider) -> (String, String) {
    let c = app.create_connector(forward(provider)).await;
    let (_, token) = app.agent("asha@example.com", &["101"]).await;
    let popup = app.popup(&c, "8611795988", "101", "call-7").await;
    let res = app
        .client
        .post(app.url("/api/v1/dispositions"))
        .bearer_auth(&token)
        .json(&json!({"popup_id": popup["Id"], "value": "Interested", "notes": "said \"call me\" {later}"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    (popup["LeadId"].as_str().unwrap().to_owned(), c.secret_key)
}

#[tokio::test]
async fn a_provider_failing_twice_gets_the_disposition_once_with_one_idempotency_key() {
    let provider = FakeProvider::start(vec![(500, "oops"), (500, "oops"), (200, "ok")]).await;
    let app = spawn_app_with(|s| s.outbox.initial_backoff_ms = 20).await;

    let (lead, _) = dispose_one(&app, &provider).await;

    let item = outbox_item(&app.url(""), &app.admin_token, "delivered").await;
    assert_eq!(item["attempts"], 3);
    assert_eq!(item["kind"], "disposition_forward");
    let got = provider.requests();
    assert_eq!(got.len(), 3, "two failures, then one accepted delivery");
    for r in &got {
        assert_eq!(r.headers["idempotency-key"], item["id"].as_str().unwrap());
        assert_eq!(r.headers["x-api-key"], "provider-secret-header");
    }
    let body: Value = serde_json::from_str(&got[2].body).unwrap();
    assert_eq!(
        body,
        json!({"value": "Interested", "session": "call-7", "notes": "said \"call me\" {later}", "lead": lead, "agent": "asha@example.com"})
    );
    let rows = app.telephony_logs("endpoint=disposition_forward", 3).await;
    assert_eq!(rows.iter().filter(|r| r["outcome"] == "failed").count(), 2);
    let text = serde_json::to_string(&rows).unwrap();
    assert!(
        !text.contains("provider-secret-header") && !text.contains("key=abc"),
        "no header values or query strings in logs"
    );
}

#[tokio::test]
async fn an_item_past_its_maximum_age_fails_and_the_admin_can_retry_it() {
    let provider = FakeProvider::start(vec![(503, "down")]).await;
    let app = spawn_app_with(|s| {
        s.outbox.initial_backoff_ms = 20;
        s.outbox.max_age_secs = 1;
    })
    .await;
    dispose_one(&app, &provider).await;

    let failed = outbox_item(&app.url(""), &app.admin_token, "failed").await;
    assert!(
        failed["last_error"].as_str().unwrap().contains("503"),
        "{failed}"
    );
    provider.answer(vec![(200, "ok")]);
    let id = failed["id"].as_str().unwrap();
    let (status, retried) = app
        .admin(
            reqwest::Method::POST,
            &format!("/api/v1/outbox/{id}/retry"),
            None,
        )
        .await;
    assert_eq!(
        (status, retried["status"].as_str().unwrap()),
        (200, "pending")
    );

    let delivered = outbox_item(&app.url(""), &app.admin_token, "delivered").await;
    assert_eq!(delivered["id"], id);
}

#[tokio::test]
async fn a_400_fails_the_item_at_once() {
    let provider = FakeProvider::start(vec![(400, "bad")]).await;
    let app = spawn_app_with(|s| s.outbox.initial_backoff_ms = 20).await;
    dispose_one(&app, &provider).await;

    let failed = outbox_item(&app.url(""), &app.admin_token, "failed").await;

    assert_eq!(failed["attempts"], 1);
    assert_eq!(provider.requests().len(), 1);
}

/// The real binary on `store`, retrying the outbox quickly.
async fn start_binary(
    store: &crate::helpers::TestStore,
    admin: &str,
) -> (tokio::process::Child, String) {
    let fast = [("UTC__OUTBOX__INITIAL_BACKOFF_MS", "50".to_owned())];
    crate::helpers::start_binary(store, admin, &fast).await
}

#[tokio::test]
async fn a_disposition_accepted_before_a_sigkill_is_delivered_after_the_restart() {
    let provider = FakeProvider::start(vec![(503, "down")]).await;
    let store = crate::helpers::TestStore::new().await;
    let admin = "admin-kill-test";
    let client = reqwest::Client::new();
    let (mut first, url) = start_binary(&store, admin).await;
    let post = |path: &str, body: Value| {
        client
            .post(format!("{url}{path}"))
            .bearer_auth(admin)
            .json(&body)
            .send()
    };
    let c: Value = post("/api/v1/connectors", forward(&provider))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let u: Value = post(
        "/api/v1/users",
        json!({"name": "A", "email": "a@example.com", "phone_numbers": ["101"]}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let t: Value = post(
        &format!("/api/v1/users/{}/tokens", u["id"].as_str().unwrap()),
        json!({}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let popup: Value = client
        .post(format!("{url}/v2/Telephony.svc/ShowAgentPopup?accessKey={}&secretKey={}", c["access_key"].as_str().unwrap(), c["secret_key"].as_str().unwrap()))
        .body(r#"{"SourceNumber":"8611795988","DestinationNumber":"101","Direction":"Inbound","CallSessionId":"k-1"}"#)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let res = client
        .post(format!("{url}/api/v1/dispositions"))
        .bearer_auth(t["token"].as_str().unwrap())
        .json(&json!({"popup_id": popup["Message"]["Id"], "value": "Interested"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);

    first.kill().await.unwrap(); // SIGKILL: no shutdown, no flush
    provider.answer(vec![(200, "ok")]);
    let (_second, url2) = start_binary(&store, admin).await;

    let item = outbox_item(&url2, admin, "delivered").await;
    let accepted: Vec<_> = provider
        .requests()
        .into_iter()
        .filter(|r| r.headers["idempotency-key"] == item["id"].as_str().unwrap())
        .collect();
    assert!(!accepted.is_empty());
    let body: Value = serde_json::from_str(&accepted.last().unwrap().body).unwrap();
    assert_eq!(body["session"], "k-1");
}
