//! SPEC 2.4 — single sign-on.

use crate::helpers::{TestApp, TestConnector, spawn_app};
use serde_json::{Value, json};
use utc_gateway::domain::ids::UserId;
use utc_gateway::domain::time::Timestamp;
use utc_gateway::service::auth::sha256_hex;

async fn sso(app: &TestApp, c: &TestConnector, body: Value) -> (u16, Value) {
    let res = app
        .client
        .post(app.url(&format!(
            "/api/v1/sso?accessKey={}&secretKey={}",
            c.access_key, c.secret_key
        )))
        .json(&body)
        .send()
        .await
        .unwrap();
    (res.status().as_u16(), res.json().await.unwrap())
}

async fn exchange(app: &TestApp, key: &str) -> (u16, Value) {
    let res = app
        .client
        .post(app.url("/api/v1/sso/exchange"))
        .json(&json!({"key": key}))
        .send()
        .await
        .unwrap();
    (res.status().as_u16(), res.json().await.unwrap())
}

#[tokio::test]
async fn sso_gives_a_working_token_and_a_one_time_key_that_works_once() {
    let app = spawn_app().await;
    let c = app.connector().await;
    let (id, _) = app.agent("asha@example.com", &["101"]).await;

    let (status, out) = sso(&app, &c, json!({"Email": "ASHA@example.com"})).await;

    assert_eq!(status, 200, "{out}");
    let m = &out["Message"];
    let me: Value = app
        .client
        .get(app.url("/api/v1/me"))
        .bearer_auth(m["Token"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["id"], id.as_str());
    let url = m["ConsoleUrl"].as_str().unwrap();
    let key = url
        .strip_prefix("http://localhost:8080/?sso=")
        .expect("console URL on public_url");
    let (first, session) = exchange(&app, key).await;
    assert_eq!(first, 200, "{session}");
    assert_eq!(session["user"]["id"], id.as_str());
    let me2 = app
        .client
        .get(app.url("/api/v1/me"))
        .bearer_auth(session["token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(me2.status().as_u16(), 200);

    let (again, err) = exchange(&app, key).await;
    assert_eq!(
        (again, err["error"]["code"].as_str().unwrap()),
        (401, "sso_key_invalid")
    );
    let rows = app.telephony_logs("endpoint=sso", 1).await;
    assert!(!rows[0].to_string().contains(&c.secret_key));
}

#[tokio::test]
async fn an_expired_or_unknown_key_is_refused() {
    let app = spawn_app().await;
    let (id, _) = app.agent("asha@example.com", &["101"]).await;
    let user = UserId::parse(&id).unwrap();
    app.state
        .store
        .create_sso_key(
            &sha256_hex("stale-key"),
            user,
            Timestamp::now().plus_secs(-1),
        )
        .await
        .unwrap();

    assert_eq!(exchange(&app, "stale-key").await.0, 401);
    assert_eq!(exchange(&app, "never-issued").await.0, 401);
}

#[tokio::test]
async fn sso_needs_an_active_user_who_sees_the_connector() {
    let app = spawn_app().await;
    let _default = app.connector().await;
    let north = app.create_connector(json!({"name": "North"})).await;
    let team = app
        .admin_post("/api/v1/teams", json!({"name": "North"}))
        .await;
    app.admin(
        reqwest::Method::PUT,
        &format!("/api/v1/connectors/{}/teams", north.id),
        Some(json!({"team_ids": [team["id"]]})),
    )
    .await;
    let (id, _) = app.agent("asha@example.com", &["101"]).await;

    let (status, out) = sso(&app, &north, json!({"UserId": id})).await;
    assert_eq!(
        (status, out["ExceptionType"].as_str().unwrap()),
        (403, "ConnectorNotVisible")
    );

    app.admin(
        reqwest::Method::PATCH,
        &format!("/api/v1/users/{id}"),
        Some(json!({"active": false})),
    )
    .await;
    let (status, out) = sso(
        &app,
        &_default,
        json!({"UserId": id, "Email": "nobody@example.com"}),
    )
    .await;
    assert_eq!(
        (status, out["ExceptionType"].as_str().unwrap()),
        (403, "UserInactive")
    );

    let (status, out) = sso(
        &app,
        &_default,
        json!({"userid": uuid::Uuid::new_v4().to_string()}),
    )
    .await;
    assert_eq!(
        (
            status,
            out["ExceptionType"].as_str().unwrap(),
            out["Field"].as_str().unwrap()
        ),
        (404, "UserNotFound", "UserId")
    );
    let (status, out) = sso(&app, &_default, json!({})).await;
    assert_eq!(
        (status, out["ExceptionType"].as_str().unwrap()),
        (422, "MandatoryFieldMissing")
    );
}
