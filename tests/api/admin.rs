//! SPEC 6 and 9 — the admin API's shapes and errors, and the agent's REST routes.

use crate::helpers::spawn_app;
use reqwest::Method;
use serde_json::{Value, json};

#[tokio::test]
async fn admin_routes_need_the_admin_token() {
    let app = spawn_app().await;
    let (_, agent) = app.agent("asha@example.com", &["101"]).await;

    let none = app
        .client
        .get(app.url("/api/v1/users"))
        .send()
        .await
        .unwrap();
    assert_eq!(none.status().as_u16(), 401);
    let body: Value = none.json().await.unwrap();
    assert_eq!(
        body,
        json!({"error": {"code": "unauthorized", "message": "a valid bearer token is required", "field": null}})
    );
    let as_agent = app
        .client
        .get(app.url("/api/v1/users"))
        .bearer_auth(&agent)
        .send()
        .await
        .unwrap();
    assert_eq!(as_agent.status().as_u16(), 403);
}

#[tokio::test]
async fn malformed_and_mistyped_bodies_name_the_problem() {
    let app = spawn_app().await;

    let res = app
        .client
        .post(app.url("/api/v1/users"))
        .bearer_auth(&app.admin_token)
        .body("{\"name\":")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 400);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_json");

    let (status, body) = app
        .admin(
            Method::POST,
            "/api/v1/users",
            Some(json!({"name": "A", "email": "a@b.c", "phone_numbers": ["101", 5]})),
        )
        .await;
    assert_eq!(status, 422);
    assert_eq!(body["error"]["field"], "phone_numbers[1]");

    let (status, body) = app
        .admin(
            Method::POST,
            "/api/v1/users",
            Some(json!({"name": "A", "email": "a@b.c", "phone_numbers": ["12345678"]})),
        )
        .await;
    assert_eq!(
        (status, body["error"]["field"].clone()),
        (422, json!("phone_numbers[0]"))
    );

    let (status, body) = app
        .admin(
            Method::POST,
            "/api/v1/leads",
            Some(json!({"email": "nope"})),
        )
        .await;
    assert_eq!(
        (status, body["error"]["field"].clone()),
        (422, json!("email"))
    );
    assert_eq!(app.lead_count().await, 0);
}

#[tokio::test]
async fn emails_and_numbers_are_unique_across_users() {
    let app = spawn_app().await;
    app.agent("asha@example.com", &["+91 98450 12345"]).await;

    let (status, body) = app
        .admin(
            Method::POST,
            "/api/v1/users",
            Some(json!({"name": "B", "email": "ASHA@example.com"})),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (409, json!("email_in_use"))
    );

    let (status, body) = app
        .admin(
            Method::POST,
            "/api/v1/users",
            Some(json!({"name": "B", "email": "b@example.com", "phone_numbers": ["09845012345"]})),
        )
        .await;
    assert_eq!(status, 409);
    assert_eq!(
        body["error"],
        json!({"code": "number_in_use", "message": "phone_numbers[0] is already in use", "field": "phone_numbers[0]"})
    );
    assert_eq!(
        app.admin_get("/api/v1/users").await["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn a_virtual_number_belongs_to_one_connector() {
    let app = spawn_app().await;
    let a = app.connector().await;
    let b = app
        .create_connector(json!({"name": "Knowlarity", "kind": "super_receptionist_v2"}))
        .await;
    app.admin_post(
        &format!("/api/v1/connectors/{}/virtual-numbers", a.id),
        json!({"number": "+91 80 6900 0000"}),
    )
    .await;

    let (status, body) = app
        .admin(
            Method::POST,
            &format!("/api/v1/connectors/{}/virtual-numbers", b.id),
            Some(json!({"number": "08069000000"})),
        )
        .await;

    assert_eq!(
        (status, body["error"]["code"].clone()),
        (409, json!("number_in_use"))
    );
    let got = app.admin_get(&format!("/api/v1/connectors/{}", a.id)).await;
    assert_eq!(got["is_default"], true);
    assert!(
        got.get("secret_key").is_none(),
        "get shows the access key only"
    );
}

#[tokio::test]
async fn leads_are_patched_with_merge_patch_and_found_by_any_of_their_numbers() {
    let app = spawn_app().await;
    let id = app
        .create_lead(
            json!({"first_name": "Meera", "phone": "8611795988", "fields": {"city": "Pune"}}),
        )
        .await;

    let (status, lead) = app
        .admin(Method::PATCH, &format!("/api/v1/leads/{id}"), Some(json!({"last_name": "Rao", "secondary_numbers": ["9000000001"], "fields": {"city": null}})))
        .await;

    assert_eq!(status, 200, "{lead}");
    assert_eq!(lead["first_name"], "Meera");
    assert_eq!(lead["last_name"], "Rao");
    assert_eq!(lead["fields"], json!({}));
    assert_eq!(
        app.leads_with_phone("+919000000001").await[0]["id"],
        id.as_str()
    );
    assert_eq!(app.leads_with_phone("08611795988").await.len(), 1);
}

#[tokio::test]
async fn an_agent_reads_me_and_searches_leads_by_name_or_number() {
    let app = spawn_app().await;
    let (id, token) = app.agent("asha@example.com", &["101"]).await;
    app.create_lead(json!({"first_name": "Meera", "phone": "8611795988"}))
        .await;
    app.create_lead(json!({"first_name": "Mohan", "email": "mohan@example.com"}))
        .await;
    let get = |path: String| app.client.get(app.url(&path)).bearer_auth(&token).send();

    let me: Value = get("/api/v1/me".into())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["id"], id.as_str());
    assert_eq!(me["phone_numbers"], json!(["101"]));

    let by_name: Value = get("/api/v1/leads?q=me".into())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(by_name["items"].as_array().unwrap().len(), 1);
    let by_prefix: Value = get("/api/v1/leads?q=M".into())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(by_prefix["items"].as_array().unwrap().len(), 2);
    let by_number: Value = get("/api/v1/leads?q=%2B918611795988".into())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(by_number["items"][0]["first_name"], "Meera");
}

#[tokio::test]
async fn health_and_readiness_need_no_token() {
    let app = spawn_app().await;
    let ready: Value = app
        .client
        .get(app.url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        ready,
        json!({"status": "ready", "store": "ok", "redis": "off"})
    );
    assert_eq!(
        app.client
            .get(app.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
}

#[tokio::test]
async fn a_store_that_cannot_commit_makes_readyz_503_and_provider_requests_503_accepting_nothing() {
    use sqlx::Connection as _;
    if crate::helpers::on_postgres() {
        // SQLite only: it locks the database file; PostgreSQL has no such single lock
        return;
    }
    let app = spawn_app().await;
    let c = app.connector().await;
    app.agent("asha@example.com", &["101"]).await;
    // another process holds the database's write lock
    let mut locker = sqlx::SqliteConnection::connect(&app.settings.store.url)
        .await
        .unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut locker)
        .await
        .unwrap();

    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    let (status, out) = app
        .post_popup(&c, r#"{"SourceNumber":"8611795988","DestinationNumber":"101","Direction":"Inbound","CallSessionId":"locked"}"#)
        .await;

    assert_eq!(ready.status().as_u16(), 503);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(
        (&body["status"], &body["store"]),
        (&json!("unavailable"), &json!("down"))
    );
    assert_eq!(
        (status, &out["ExceptionType"]),
        (503, &json!("ServiceUnavailable")),
        "{out}"
    );
    sqlx::query("ROLLBACK").execute(&mut locker).await.unwrap();
    assert_eq!(app.lead_count().await, 0, "nothing was accepted");
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(
        ready.status().as_u16(),
        200,
        "ready again once the lock is gone"
    );
}

#[tokio::test]
async fn shutdown_closes_sockets_with_1001_and_readiness_fails() {
    let app = spawn_app().await;
    let (_, token) = app.agent("asha@example.com", &["101"]).await;
    let (mut tab, _) = app.agent_socket(&token, None).await;

    app.state.shutdown.token.cancel();

    assert_eq!(tab.expect_close().await, Some(1001));
    app.handle.await.unwrap().unwrap();
}

#[tokio::test]
async fn metrics_are_prometheus_text_without_ids_or_keys() {
    let app = spawn_app().await;
    let c = app.connector().await;
    let (user, _) = app.agent("asha@example.com", &["101"]).await;
    let answer = app.popup(&c, "8611795988", "101", "metrics-call").await;

    let res = app.client.get(app.url("/metrics")).send().await.unwrap();

    assert_eq!(res.status().as_u16(), 200);
    let text = res.text().await.unwrap();
    assert!(text.contains("utc_provider_requests_total"), "{text}");
    assert!(text.contains("utc_popups_total"), "{text}");
    assert!(
        text.contains("route=\"/api/v1/users/{id}/tokens\""),
        "{text}"
    );
    for secret in [
        c.id.as_str(),
        c.access_key.as_str(),
        c.secret_key.as_str(),
        user.as_str(),
        answer["Id"].as_str().unwrap(),
        "8611795988",
    ] {
        assert!(!text.contains(secret), "metrics reveal {secret}");
    }
}

/// The value of an unlabelled sample (`name value`) in Prometheus text, 0 when absent;
/// every other line must parse as a sample, a `# HELP`/`# TYPE` comment or be empty.
fn sample(text: &str, name: &str) -> f64 {
    let mut found = 0.0;
    for line in text.lines() {
        if line.is_empty() || line.starts_with("# HELP ") || line.starts_with("# TYPE ") {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("a sample line");
        let value: f64 = value.parse().expect("a numeric sample value");
        assert!(
            series
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_'),
            "{line}"
        );
        if series == name {
            found = value;
        }
    }
    found
}

#[tokio::test]
async fn the_popup_round_trip_histogram_counts_the_frames_written() {
    let app = spawn_app().await;
    let c = app.connector().await;
    let (_, token) = app.agent("asha@example.com", &["101"]).await;
    let (mut tab1, _) = app.agent_socket(&token, None).await;
    let (mut tab2, _) = app.agent_socket(&token, None).await;
    let scrape = || async {
        let text = app
            .client
            .get(app.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        sample(&text, "utc_popup_round_trip_seconds_count")
    };
    let before = scrape().await;

    for i in 0..3 {
        app.popup(&c, "8611795988", "101", &format!("rtt-{i}"))
            .await;
        tab1.expect("popup").await;
        tab2.expect("popup").await;
    }

    // other tests in this binary may add to the same process-wide histogram
    assert!(
        scrape().await - before >= 6.0,
        "3 popups written to 2 sockets"
    );
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_in_the_surface_shape() {
    let app = spawn_app().await;

    let res = app
        .client
        .delete(app.url("/api/v1/me"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 405);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "method_not_allowed");

    let res = app
        .client
        .get(app.url("/v2/Telephony.svc/ShowAgentPopup"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 405);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["Status"], "Error");

    let res = app
        .client
        .get(app.url("/api/v1/nothing"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 404);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found");

    let res = app.client.get(app.url("/ws")).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 426);
}

#[tokio::test]
async fn the_console_is_served_without_referrer_and_with_a_strict_policy() {
    let app = spawn_app().await;

    let res = app.client.get(app.url("/?sso=abc")).send().await.unwrap();

    assert_eq!(res.status().as_u16(), 200);
    assert_eq!(res.headers()["referrer-policy"], "no-referrer");
    assert!(
        res.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("script-src 'self'")
    );
    let html = res.text().await.unwrap();
    assert!(html.contains("/assets/console.js"));
    let js = app
        .client
        .get(app.url("/assets/console.js"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        js.contains("history.replaceState"),
        "the one-time key leaves the address bar"
    );
    assert!(
        !js.contains("innerHTML"),
        "server values are inserted as text only"
    );
}
