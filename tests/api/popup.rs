//! SPEC 2.1 — agent popups.

use crate::helpers::{spawn_app, spawn_app_with};
use serde_json::{Value, json};

#[tokio::test]
async fn a_popup_reaches_both_tabs_of_the_right_agent_and_no_other_agent() {
    // Arrange
    let app = spawn_app().await;
    let c = app.connector().await;
    let (_, asha) = app.agent("asha@example.com", &["+91 98450 12345"]).await;
    let (_, ravi) = app.agent("ravi@example.com", &["102"]).await;
    let (mut tab1, _) = app.agent_socket(&asha, None).await;
    let (mut tab2, _) = app.agent_socket(&asha, None).await;
    let (mut other, _) = app.agent_socket(&ravi, None).await;

    // Act
    let answer = app.popup(&c, "08611795988", "9845012345", "call-1").await;

    // Assert
    assert_eq!(answer["Delivered"], 2);
    assert_eq!(answer["Queued"], false);
    assert_eq!(answer["Message"], "Message broadcasted successfully");
    for tab in [&mut tab1, &mut tab2] {
        let f = tab.expect("popup").await;
        assert_eq!(f["popup"]["id"], answer["Id"]);
        assert_eq!(f["popup"]["call"]["lead_number"], "+918611795988");
        assert_eq!(f["popup"]["call"]["connector_name"], "Exotel");
        assert_eq!(f["popup"]["lead"]["id"], answer["LeadId"]);
        assert_eq!(f["popup"]["new_lead"], true);
        assert_eq!(
            f["popup"]["disposition_form"]["values"],
            json!(["Interested", "Not interested"])
        );
        assert!(f["popup"]["disposition_form"].get("forward").is_none());
        assert!(f["seq"].as_i64().unwrap() > 0);
    }
    assert!(
        other.drain().await.is_empty(),
        "another agent must not see the popup"
    );
}

#[tokio::test]
async fn lead_id_wins_over_the_number() {
    let app = spawn_app().await;
    let c = app.connector().await;
    app.agent("asha@example.com", &["101"]).await;
    let by_number = app
        .create_lead(json!({"first_name": "Number", "phone": "8611795988"}))
        .await;
    let chosen = app
        .create_lead(json!({"first_name": "Chosen", "phone": "9000000001"}))
        .await;

    let body = json!({"SourceNumber": "8611795988", "DestinationNumber": "101", "Direction": "Inbound",
        "CallSessionId": "c1", "LeadId": chosen});
    let (status, out) = app.post_popup(&c, &body.to_string()).await;

    assert_eq!(status, 200, "{out}");
    assert_eq!(out["Message"]["LeadId"], chosen.as_str());
    assert_ne!(out["Message"]["LeadId"], by_number.as_str());
}

#[tokio::test]
async fn a_caller_on_a_secondary_number_gets_the_existing_lead_and_no_new_lead() {
    let app = spawn_app().await;
    let c = app.connector().await;
    app.agent("asha@example.com", &["101"]).await;
    let lead = app
        .create_lead(json!({"first_name": "Meera", "phone": "9000000001", "secondary_numbers": ["+91 86117 95988"]}))
        .await;

    let answer = app.popup(&c, "918611795988", "101", "c1").await;

    assert_eq!(answer["LeadId"], lead.as_str());
    assert_eq!(app.lead_count().await, 1);
}

#[tokio::test]
async fn two_leads_sharing_a_number_give_the_most_recent_lead_and_the_other_as_candidate() {
    let app = spawn_app().await;
    let c = app.connector().await;
    let (_, token) = app.agent("asha@example.com", &["101"]).await;
    let older = app
        .create_lead(json!({"first_name": "Old", "phone": "8611795988"}))
        .await;
    let newer = app
        .create_lead(json!({"first_name": "New", "mobile": "08611795988"}))
        .await;
    let (mut tab, _) = app.agent_socket(&token, None).await;

    // the most recently updated lead wins, ties broken by id (both may share a millisecond)
    let mut by_rule = Vec::new();
    for id in [&older, &newer] {
        let l = app.admin_get(&format!("/api/v1/leads/{id}")).await;
        by_rule.push((
            std::cmp::Reverse(l["updated_at"].as_str().unwrap().to_owned()),
            id.clone(),
        ));
    }
    by_rule.sort();
    let (first, second) = (by_rule[0].1.clone(), by_rule[1].1.clone());

    let answer = app.popup(&c, "+91-8611795988", "101", "c1").await;

    assert_eq!(answer["LeadId"], first.as_str());
    let f = tab.expect("popup").await;
    let candidates: Vec<&Value> = f["popup"]["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .collect();
    assert_eq!(candidates.len(), 1);
    assert_eq!(candidates[0]["id"], second.as_str());
    assert_eq!(f["popup"]["new_lead"], false);
}

#[tokio::test]
async fn an_unknown_caller_creates_exactly_one_lead_even_when_the_call_is_posted_twice_at_once() {
    let app = spawn_app().await;
    let c = app.connector().await;
    app.agent("asha@example.com", &["101"]).await;
    let body =
        json!({"SourceNumber": "8611795988", "DestinationNumber": "101", "Direction": "Inbound",
        "CallSessionId": "same-call", "CallerName": "Ravi"})
        .to_string();

    let (a, b) = tokio::join!(app.post_popup(&c, &body), app.post_popup(&c, &body));

    assert_eq!((a.0, b.0), (200, 200));
    assert_eq!(
        a.1["Message"]["Id"], b.1["Message"]["Id"],
        "one popup per call session"
    );
    assert_eq!(a.1["Message"]["LeadId"], b.1["Message"]["LeadId"]);
    let leads = app.leads_with_phone("8611795988").await;
    assert_eq!(leads.len(), 1);
    assert_eq!(leads[0]["first_name"], "Ravi");
}

#[tokio::test]
async fn an_offline_agent_gets_the_queued_popup_when_connecting() {
    let app = spawn_app().await;
    let c = app.connector().await;
    let (_, token) = app.agent("asha@example.com", &["101"]).await;

    let answer = app.popup(&c, "8611795988", "101", "c1").await;
    assert_eq!(answer["Delivered"], 0);
    assert_eq!(answer["Queued"], true);
    assert_eq!(answer["Message"], "Queued for agent");

    let (mut tab, ready) = app.agent_socket(&token, None).await;
    let f = tab.expect("popup").await;
    assert_eq!(f["popup"]["id"], answer["Id"]);
    assert_eq!(f["seq"], ready["seq"]);
}

#[tokio::test]
async fn a_repost_of_an_open_popup_updates_it_in_place() {
    let app = spawn_app().await;
    let c = app.connector().await;
    let (_, token) = app.agent("asha@example.com", &["101"]).await;
    let (mut tab, _) = app.agent_socket(&token, None).await;

    let first = app.popup(&c, "8611795988", "101", "c1").await;
    let second = app.popup(&c, "8611795988", "101", "c1").await;

    assert_eq!(first["Id"], second["Id"]);
    let a = tab.expect("popup").await;
    let b = tab.expect("popup_update").await;
    assert_eq!(a["popup"]["id"], b["popup"]["id"]);
    assert!(b["seq"].as_i64() > a["seq"].as_i64());
}

#[tokio::test]
async fn a_wrong_key_is_401_and_leaves_a_log_row_without_the_secret() {
    let app = spawn_app().await;
    let c = app.connector().await;
    let wrong = "wrong-secret-value-123";
    let body = json!({"SourceNumber": "8611795988", "DestinationNumber": "101", "Direction": "Inbound",
        "CallSessionId": "c1", "secretKey": "body-secret-456"});

    let res = app
        .client
        .post(app.url(&format!(
            "/api/v1/telephony/agent-popup?accessKey={}&secretKey={wrong}",
            c.access_key
        )))
        .body(body.to_string())
        .send()
        .await
        .unwrap();

    assert_eq!(res.status().as_u16(), 401);
    let out: Value = res.json().await.unwrap();
    assert_eq!(
        out,
        json!({"Status": "Error", "ExceptionType": "Unauthorized",
        "ExceptionMessage": "A valid accessKey and secretKey are required", "Field": null})
    );
    let rows = app
        .telephony_logs(&format!("connector_id={}", c.id), 1)
        .await;
    assert_eq!(rows[0]["http_status"], 401);
    assert_eq!(rows[0]["outcome"], "rejected");
    assert_eq!(rows[0]["endpoint"], "agent_popup");
    let text = rows[0].to_string();
    for secret in [wrong, "body-secret-456", c.secret_key.as_str()] {
        assert!(
            !text.contains(secret),
            "a secret leaked into the log row: {text}"
        );
    }
    assert_eq!(rows[0]["request"]["CallSessionId"], "c1");
    assert_eq!(app.lead_count().await, 0);
}

#[tokio::test]
async fn bad_requests_get_the_envelope_with_code_and_field_and_change_nothing() {
    let app = spawn_app().await;
    let c = app.connector().await;
    let (_, token) = app.agent("asha@example.com", &["101"]).await;
    let (mut tab, _) = app.agent_socket(&token, None).await;
    let unknown_user = uuid::Uuid::new_v4().to_string();
    let cases: Vec<(String, u16, &str, Value)> = vec![
        ("{\"SourceNumber\": ".into(), 400, "InvalidRequest", Value::Null),
        (json!({"DestinationNumber": "101", "Direction": "Inbound", "CallSessionId": "c1"}).to_string(), 422, "MandatoryFieldMissing", json!("SourceNumber")),
        (json!({"SourceNumber": "12", "DestinationNumber": "101", "Direction": "Inbound", "CallSessionId": "c1"}).to_string(), 422, "InvalidField", json!("SourceNumber")),
        (json!({"sourcenumber": "8611795988", "UserId": unknown_user, "Direction": "inbound", "CallSessionId": "c1"}).to_string(), 404, "UserNotFound", json!("UserId")),
        (json!({"SourceNumber": "8611795988", "DestinationNumber": "555", "Direction": "Inbound", "CallSessionId": "c1"}).to_string(), 422, "AgentNotFound", json!("DestinationNumber")),
        (json!({"SourceNumber": "8611795988", "Tag": "a", "TAG": "b", "DestinationNumber": "101", "Direction": "Inbound", "CallSessionId": "c1"}).to_string(), 422, "InvalidField", json!("Tag")),
    ];

    for (body, status, code, field) in cases {
        let (got, out) = app.post_popup(&c, &body).await;
        assert_eq!(got, status, "{body}: {out}");
        assert_eq!(out["Status"], "Error");
        assert_eq!(out["ExceptionType"], code, "{body}");
        assert_eq!(out["Field"], field, "{body}");
    }

    assert_eq!(app.lead_count().await, 0);
    assert!(tab.drain().await.is_empty(), "no popup may be sent");
    let rows = app.telephony_logs("outcome=rejected", 6).await;
    assert_eq!(rows.len(), 6);
}

#[tokio::test]
async fn a_disabled_popup_is_validated_and_logged_and_nothing_else_happens() {
    let app = spawn_app().await;
    let c = app
        .create_connector(json!({"name": "Quiet", "popup": {"enabled": false}}))
        .await;
    app.agent("asha@example.com", &["101"]).await;

    let (status, out) = app
        .post_popup(&c, &json!({"SourceNumber": "8611795988", "DestinationNumber": "101", "Direction": "Inbound", "CallSessionId": "c1"}).to_string())
        .await;

    assert_eq!(status, 200);
    assert_eq!(
        out["Message"],
        json!({"Id": null, "LeadId": null, "Delivered": 0, "Queued": false, "Message": "Agent popup disabled"})
    );
    assert_eq!(app.lead_count().await, 0);
    app.telephony_logs("outcome=ok", 1).await;
}

#[tokio::test]
async fn provider_paths_and_field_names_are_case_insensitive_and_keys_work_as_headers() {
    let app = spawn_app().await;
    let c = app.connector().await;
    app.agent("asha@example.com", &["101"]).await;

    let res = app
        .client
        .post(app.url("/V2/telephony.SVC/showagentpopup"))
        .header("x-LSQ-AccessKey", &c.access_key)
        .header("x-lsq-secretkey", &c.secret_key)
        .body(r#"{"SOURCENUMBER":"8611795988","destinationnumber":"101","direction":"inbound","callsessionid":"c9"}"#)
        .send()
        .await
        .unwrap();

    assert_eq!(res.status().as_u16(), 200);
    let out: Value = res.json().await.unwrap();
    assert_eq!(out["Status"], "Success");
    match out["Message"]["Queued"] {
        Value::Bool(true) => {}
        ref other => panic!("expected a queued popup, got {other}"),
    }
}

#[tokio::test]
async fn a_body_over_the_limit_is_413_in_the_envelope() {
    let app = spawn_app_with(|s| s.server.max_body_bytes = 1024).await;
    let c = app.connector().await;

    let (status, out) = app
        .post_popup(&c, &format!("{{\"Tag\": \"{}\"}}", "x".repeat(4096)))
        .await;

    assert_eq!(status, 413);
    assert_eq!(out["ExceptionType"], "PayloadTooLarge");
    app.telephony_logs("outcome=rejected", 1).await;
}

#[tokio::test]
async fn a_connector_over_its_rate_gets_429_with_retry_after() {
    let app = spawn_app_with(|s| {
        s.limits.provider_rate_per_sec = 1;
        s.limits.provider_burst = 2;
    })
    .await;
    let c = app.connector().await;
    let other = app.create_connector(json!({"name": "Other"})).await;
    let body = json!({"SourceNumber": "8611795988", "DestinationNumber": "555", "Direction": "Inbound", "CallSessionId": "c1"}).to_string();

    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(app.post_popup(&c, &body).await.0);
    }
    let res = app
        .client
        .post(app.url(&format!(
            "/api/v1/telephony/agent-popup?accessKey={}&secretKey={}",
            c.access_key, c.secret_key
        )))
        .body(body.clone())
        .send()
        .await
        .unwrap();

    assert_eq!(
        &statuses[..2],
        &[422, 422],
        "the burst passes (and fails validation)"
    );
    assert_eq!(res.status().as_u16(), 429);
    assert!(res.headers().get("retry-after").is_some());
    let out: Value = res.json().await.unwrap();
    assert_eq!(out["ExceptionType"], "RateLimited");
    assert_eq!(
        app.post_popup(&other, &body).await.0,
        422,
        "other connectors are not limited"
    );
}

#[tokio::test]
async fn a_value_with_a_nul_character_is_refused_naming_its_field_and_changes_nothing() {
    // Arrange: PostgreSQL cannot store NUL; no store may be asked to
    let app = spawn_app().await;
    let c = app.connector().await;
    app.agent("asha@example.com", &["101"]).await;
    let body = json!({"SourceNumber": "08611795988", "DestinationNumber": "101", "Direction": "Inbound", "callsessionid": "a\u{0}b", "CallerName": "Meera"});

    // Act
    let (status, out) = app.post_popup(&c, &body.to_string()).await;
    let (lead_status, lead) = app
        .admin(
            reqwest::Method::POST,
            "/api/v1/leads",
            Some(json!({"first_name": "Mee\u{0}ra", "phone": "8611795989"})),
        )
        .await;

    // Assert
    assert_eq!(status, 422, "{out}");
    assert_eq!(out["ExceptionType"], "InvalidField");
    assert_eq!(out["Field"], "CallSessionId");
    assert_eq!(lead_status, 422, "{lead}");
    assert_eq!(lead["error"]["code"], "validation_failed");
    assert_eq!(lead["error"]["field"], "first_name");
    assert_eq!(app.lead_count().await, 0);
}

#[tokio::test]
async fn a_known_caller_gets_the_virtual_numbers_tag_and_an_inactive_agent_is_refused_and_nothing_is_written()
 {
    let app = spawn_app().await;
    let c = app.connector().await;
    app.sales_number(&c).await;
    let (_, token) = app.agent("asha@example.com", &["101"]).await;
    let (ravi, _) = app.agent("ravi@example.com", &["102"]).await;
    app.admin(
        axum::http::Method::PATCH,
        &format!("/api/v1/users/{ravi}"),
        Some(json!({"active": false})),
    )
    .await;
    let lead = app
        .create_lead(json!({"first_name": "Meera", "phone": "8611795988"}))
        .await;
    let (mut tab, _) = app.agent_socket(&token, None).await;
    let call = |session: &str, extra: Value| {
        let mut body = json!({"SourceNumber": "8611795988", "DestinationNumber": "101",
            "Direction": "Inbound", "CallSessionId": session, "Tag": "Other"});
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        body.to_string()
    };

    // the virtual number's tag wins over the request's; without one, the request's
    let (status, out) = app
        .post_popup(&c, &call("c1", json!({"DisplayNumber": "08069000000"})))
        .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["Message"]["LeadId"], lead.as_str());
    let f = tab.expect("popup").await;
    assert_eq!(f["popup"]["call"]["tag"], "Sales");
    assert_eq!(f["popup"]["call"]["virtual_number"], "+918069000000");
    assert_eq!(f["popup"]["new_lead"], false);
    let (status, out) = app.post_popup(&c, &call("c2", json!({}))).await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(tab.expect("popup").await["popup"]["call"]["tag"], "Other");

    // an inactive agent, by number or by id, is refused and the known caller unchanged
    let by_number = json!({"DestinationNumber": "102"});
    let by_id = json!({"UserId": ravi});
    for (extra, code, field) in [
        (by_number, "AgentNotFound", json!("DestinationNumber")),
        (by_id, "AgentNotAvailable", Value::Null),
    ] {
        let (status, out) = app.post_popup(&c, &call("c3", extra)).await;
        assert_eq!(status, 422, "{out}");
        assert_eq!(out["ExceptionType"], code, "{out}");
        if !field.is_null() {
            assert_eq!(out["Field"], field);
        }
    }
    assert_eq!(app.lead_count().await, 1);
    assert!(tab.drain().await.is_empty(), "no other popup may be sent");
}
