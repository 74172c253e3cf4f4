//! SPEC 5 — click-to-call against a real local HTTP server playing the provider.

use crate::helpers::{FakeProvider, TestApp, spawn_app};
use serde_json::{Value, json};

const NAME: &str = "Añi & \"Bo\" {x}\nline2";

async fn call(app: &TestApp, token: &str, body: Value) -> (u16, Value, Option<String>) {
    let res = app
        .client
        .post(app.url("/api/v1/click-to-call"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let retry = res
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, res.json().await.unwrap(), retry)
}

/// A connector with click-to-call to `provider`, a virtual number, an agent in a team
/// the connector is assigned to, and a lead with an awkward name.
async fn setup(settings: Value) -> (TestApp, String, String, String, String) {
    let app = spawn_app().await;
    let c = app
        .create_connector(json!({"name": "Exotel", "click_to_call": settings}))
        .await;
    app.sales_number(&c).await;
    let team = app
        .admin_post("/api/v1/teams", json!({"name": "Sales"}))
        .await;
    app.admin(
        reqwest::Method::PUT,
        &format!("/api/v1/connectors/{}/teams", c.id),
        Some(json!({"team_ids": [team["id"]]})),
    )
    .await;
    let u = app
        .admin_post("/api/v1/users", json!({"name": "Asha Rao", "email": "asha@example.com", "phone_numbers": ["+91 98450 12345"], "team_ids": [team["id"]], "group_ids": ["g1", "g2"]}))
        .await;
    let token = app
        .admin_post(
            &format!("/api/v1/users/{}/tokens", u["id"].as_str().unwrap()),
            json!({}),
        )
        .await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let lead = app
        .create_lead(json!({"first_name": NAME, "phone": "08611795988", "mobile": "9000000001"}))
        .await;
    (
        app,
        c.id,
        token,
        lead,
        team["id"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn a_get_click_to_call_carries_every_placeholder_encoded_in_the_query() {
    let provider = FakeProvider::start(vec![(200, "call queued")]).await;
    let url = provider.url(
        "/call?from=@agentNumber&to=@customerNumber&e164=@PhoneNumberWithCountryCode&vn=@virtualNumber&lead=@leadId\
         &name=@{Lead:first_name,}&stage=@{Lead:stage,cold}&team=@{User:TeamId,none}&groups=@{User:GroupIds,}\
         &agent=@agentName&mail=@agentEmail&opp=@opportunityId",
    );
    let (app, connector, token, lead, team) =
        setup(json!({"url": url, "method": "GET", "headers": {"X-Agent": "@agentEmail"}, "response_keyword": "queued"})).await;

    let (status, out, _) = call(&app, &token, json!({"lead_id": lead})).await;

    assert_eq!(status, 200, "{out}");
    assert_eq!(out["ok"], true);
    assert_eq!(out["connector_id"], connector.as_str());
    assert_eq!(out["virtual_number"], "+918069000000");
    assert_eq!(
        (out["provider_status"].clone(), out["provider_body"].clone()),
        (json!(200), json!("call queued"))
    );
    let got = provider.requests();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].method, "GET");
    let q: std::collections::HashMap<String, String> = got[0].query.iter().cloned().collect();
    assert_eq!(q["from"], "+919845012345");
    assert_eq!(q["to"], "8611795988");
    assert_eq!(q["e164"], "+918611795988");
    assert_eq!(q["vn"], "+918069000000");
    assert_eq!(q["lead"], lead);
    assert_eq!(q["name"], NAME);
    assert_eq!(q["stage"], "cold");
    assert_eq!(q["team"], team);
    assert_eq!(q["groups"], "g1,g2");
    assert_eq!(q["agent"], "Asha Rao");
    assert_eq!(q["mail"], "asha@example.com");
    assert_eq!(q["opp"], "");
    assert_eq!(got[0].headers["x-agent"], "asha@example.com");
    let rows = app.telephony_logs("endpoint=click_to_call", 1).await;
    assert_eq!(rows[0]["outcome"], "ok");
    assert_eq!(
        rows[0]["request"]["url"],
        provider.url("/call"),
        "no query string in the log"
    );
}

#[tokio::test]
async fn a_post_click_to_call_fills_a_json_body_that_no_value_can_break() {
    let provider = FakeProvider::start(vec![(200, "{\"status\":\"ok\"}")]).await;
    let (app, _, token, lead, _) = setup(json!({"url": provider.url("/v1/calls"), "method": "POST",
        "body": "{\"to\":\"@customerNumber\",\"name\":\"@{Lead:first_name,}\",\"from\":\"@agentNumber\",\"opp\":\"@opportunityId\"}"}))
    .await;
    let opp = app
        .admin_post(
            "/api/v1/opportunities",
            json!({"lead_id": lead, "name": "Plan"}),
        )
        .await;

    let (status, out, _) = call(
        &app,
        &token,
        json!({"lead_id": lead, "number": "+919000000001", "opportunity_id": opp["id"]}),
    )
    .await;

    assert_eq!(status, 200, "{out}");
    let got = provider.requests();
    assert_eq!(got[0].method, "POST");
    assert_eq!(got[0].headers["content-type"], "application/json");
    let body: Value = serde_json::from_str(&got[0].body).unwrap();
    assert_eq!(
        body,
        json!({"to": "9000000001", "name": NAME, "from": "+919845012345", "opp": opp["id"]})
    );
}

#[tokio::test]
async fn an_answer_without_the_keyword_is_a_failure_for_the_agent() {
    let provider = FakeProvider::start(vec![(200, "agent busy")]).await;
    let (app, _, token, lead, _) =
        setup(json!({"url": provider.url("/call"), "method": "GET", "response_keyword": "queued"}))
            .await;

    let (status, out, _) = call(&app, &token, json!({"lead_id": lead})).await;

    assert_eq!(status, 502);
    assert_eq!(out["error"]["code"], "provider_failed");
    assert_eq!(out["error"]["provider_status"], 200);
    assert_eq!(out["error"]["provider_body"], "agent busy");
    let rows = app
        .telephony_logs("endpoint=click_to_call&outcome=failed", 1)
        .await;
    assert_eq!(rows[0]["request"]["response_body"], "agent busy");
}

#[tokio::test]
async fn a_double_click_places_one_call() {
    let provider = FakeProvider::start(vec![(200, "ok")]).await;
    let (app, _, token, lead, _) =
        setup(json!({"url": provider.url("/call"), "method": "GET"})).await;

    let (first, _, _) = call(&app, &token, json!({"lead_id": lead})).await;
    let (second, out, retry) = call(&app, &token, json!({"lead_id": lead})).await;

    assert_eq!(first, 200);
    assert_eq!(
        (second, out["error"]["code"].as_str().unwrap()),
        (429, "rate_limited")
    );
    assert!(retry.is_some());
    assert_eq!(provider.requests().len(), 1);
}

#[tokio::test]
async fn bad_click_to_calls_are_refused_before_any_provider_call() {
    let provider = FakeProvider::start(vec![(200, "ok")]).await;
    let (app, _, token, lead, _) =
        setup(json!({"url": provider.url("/call"), "method": "GET"})).await;
    let other = app.create_connector(json!({"name": "Other"})).await;
    app.admin_post(
        &format!("/api/v1/connectors/{}/virtual-numbers", other.id),
        json!({"number": "08069000001"}),
    )
    .await;
    let bare = app.create_lead(json!({"first_name": "No number"})).await;

    let cases = [
        (
            json!({"lead_id": lead, "virtual_number": "08069000001"}),
            403,
            "virtual_number_not_visible",
        ),
        (
            json!({"lead_id": lead, "number": "9000000002"}),
            422,
            "validation_failed",
        ),
        (json!({"lead_id": bare}), 422, "validation_failed"),
        (
            json!({"lead_id": uuid::Uuid::new_v4().to_string()}),
            404,
            "not_found",
        ),
    ];
    for (body, status, code) in cases {
        let (got, out, _) = call(&app, &token, body.clone()).await;
        assert_eq!(
            (got, out["error"]["code"].as_str().unwrap_or_default()),
            (status, code),
            "{body}: {out}"
        );
    }
    assert!(provider.requests().is_empty());

    // a user in no team sees the default connector: make it one without click-to-call
    app.admin(
        reqwest::Method::POST,
        &format!("/api/v1/connectors/{}/default", other.id),
        None,
    )
    .await;
    let (_, plain) = app.agent("plain@example.com", &["103"]).await;
    let (status, out, _) = call(&app, &plain, json!({"lead_id": lead})).await;
    assert_eq!(
        (status, out["error"]["code"].as_str().unwrap_or_default()),
        (422, "click_to_call_not_configured"),
        "{out}"
    );
}

#[tokio::test]
async fn a_json_body_with_a_placeholder_outside_a_string_is_refused_when_saved() {
    let app = spawn_app().await;

    let (status, out) = app
        .admin(reqwest::Method::POST, "/api/v1/connectors", Some(json!({"name": "X", "click_to_call": {"url": "http://p/", "body": "{\"to\": @customerNumber}"}})))
        .await;
    assert_eq!(
        (status, out["error"]["field"].as_str().unwrap()),
        (422, "click_to_call.body")
    );
    let (status, out) = app
        .admin(
            reqwest::Method::POST,
            "/api/v1/connectors",
            Some(json!({"name": "X", "click_to_call": {"url": "http://p/?x=@{Lead:}"}})),
        )
        .await;
    assert_eq!(
        (status, out["error"]["field"].as_str().unwrap()),
        (422, "click_to_call.url")
    );
    assert!(
        app.admin_get("/api/v1/connectors").await["items"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}

/// An agent clicked to call `lead`'s number, which a newer lead shares (without the
/// click the newer one would win). Returns the app, the connector's keys, the clicked
/// lead and the newer one.
async fn clicked_with_a_newer_lead() -> (TestApp, crate::helpers::TestConnector, String, String) {
    let provider = FakeProvider::start(vec![(200, "ok")]).await;
    let (app, _, token, lead, _) =
        setup(json!({"url": provider.url("/call"), "method": "GET"})).await;
    // a later millisecond, so that the newer lead sorts first among the number's leads
    tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    let newer = app
        .create_lead(json!({"first_name": "Newer", "phone": "8611795988"}))
        .await;
    let (status, _, _) = call(&app, &token, json!({"lead_id": lead})).await;
    assert_eq!(status, 200);
    let connectors = app.admin_get("/api/v1/connectors").await;
    let c = connectors["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "Exotel")
        .unwrap()
        .clone();
    let c = app
        .admin(
            reqwest::Method::POST,
            &format!(
                "/api/v1/connectors/{}/rotate-keys",
                c["id"].as_str().unwrap()
            ),
            None,
        )
        .await
        .1;
    let keys = crate::helpers::TestConnector {
        id: c["id"].as_str().unwrap().to_owned(),
        access_key: c["access_key"].as_str().unwrap().to_owned(),
        secret_key: c["secret_key"].as_str().unwrap().to_owned(),
    };
    (app, keys, lead, newer)
}

#[tokio::test]
async fn a_later_outbound_popup_to_the_clicked_number_takes_the_clicked_lead() {
    let (app, keys, lead, newer) = clicked_with_a_newer_lead().await;

    let (status, out) = app
        .post_popup(&keys, r#"{"SourceNumber":"+919845012345","DestinationNumber":"8611795988","Direction":"Outbound","CallSessionId":"out-1"}"#)
        .await;

    assert_eq!(status, 200, "{out}");
    assert_eq!(out["Message"]["LeadId"], lead.as_str());
    assert_ne!(out["Message"]["LeadId"], newer.as_str());
}

#[tokio::test]
async fn a_later_outbound_call_log_to_the_clicked_number_goes_on_the_clicked_lead() {
    let (app, keys, lead, newer) = clicked_with_a_newer_lead().await;

    let (status, out) = app
        .post_call_log(
            &keys,
            r#"{"SourceNumber":"+919845012345","DestinationNumber":"8611795988","DisplayNumber":"+918069000000","Direction":"Outbound","CallSessionId":"out-log-1","StartTime":"2026-12-06 10:00:00","EndTime":"2026-12-06 10:01:00","CallDuration":60,"Status":"Answered"}"#,
            "application/json",
        )
        .await;

    assert_eq!(status, 200, "{out}");
    assert_eq!(out["Message"]["LeadId"], lead.as_str());
    assert_ne!(out["Message"]["LeadId"], newer.as_str());
}

#[tokio::test]
async fn the_socket_command_places_the_call_and_answers_with_a_result() {
    let provider = FakeProvider::start(vec![(200, "queued")]).await;
    let (app, connector, token, lead, _) =
        setup(json!({"url": provider.url("/call?to=@customerNumber"), "method": "GET"})).await;
    let (mut tab, _) = app.agent_socket(&token, None).await;

    tab.send(json!({"type": "click_to_call", "req": "c1", "lead_id": lead, "virtual_number": null, "opportunity_id": null, "number": null})).await;
    let ok = tab.expect("result").await;
    tab.send(json!({"type": "click_to_call", "req": "c2", "lead_id": lead}))
        .await;
    let again = tab.expect("result").await;

    assert_eq!(
        (ok["req"].clone(), ok["ok"].clone()),
        (json!("c1"), json!(true)),
        "{ok}"
    );
    assert_eq!(ok["data"]["connector_id"], connector.as_str());
    assert_eq!(ok["data"]["provider_body"], "queued");
    assert_eq!(
        (again["ok"].clone(), again["error"]["code"].clone()),
        (json!(false), json!("rate_limited"))
    );
    assert_eq!(
        provider.requests()[0].query,
        vec![("to".to_owned(), "8611795988".to_owned())]
    );
}
