//! SPEC 2.3 — call routing.

use crate::helpers::{TestApp, TestConnector, spawn_app};
use reqwest::Method;
use serde_json::{Value, json};

async fn ask(app: &TestApp, c: &TestConnector, query: &str) -> (u16, String, String) {
    let res = app
        .client
        .get(app.url(&format!(
            "/api/v1/telephony/call-route?accessKey={}&secretKey={}&{query}",
            c.access_key, c.secret_key
        )))
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let ct = res
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, ct, res.text().await.unwrap())
}

fn json_of(body: &str) -> Value {
    serde_json::from_str(body).unwrap()
}

#[tokio::test]
async fn the_owner_of_the_caller_is_returned_as_json_and_as_text() {
    let app = spawn_app().await;
    let c = app.connector().await;
    let (owner, token) = app
        .agent("asha@example.com", &["+91 98450 12345", "101"])
        .await;
    app.admin(
        Method::PATCH,
        &format!("/api/v1/users/{owner}"),
        Some(json!({"provider_agent_ids": {c.id.clone(): "ex-77"}})),
    )
    .await;
    let lead = app
        .create_lead(json!({"first_name": "Meera", "phone": "8611795988", "owner_id": owner}))
        .await;
    let _online = app.agent_socket(&token, None).await;

    let (status, _, body) = ask(&app, &c, "caller_id=08611795988").await;
    assert_eq!(status, 200);
    assert_eq!(
        json_of(&body),
        json!({"Status": "Success", "Match": true, "LeadId": lead, "OwnerId": owner, "OwnerName": "asha@example.com",
            "OwnerEmail": "asha@example.com", "OwnerNumber": "+919845012345", "TelephonyAgentId": "ex-77", "Online": true})
    );

    let (status, ct, body) = ask(&app, &c, "CALLER_ID=%2B918611795988&format=text").await;
    assert_eq!((status, body.as_str()), (200, "+919845012345"));
    assert!(ct.starts_with("text/plain"));
    app.telephony_logs("endpoint=call_route&outcome=ok", 2)
        .await;
}

#[tokio::test]
async fn an_unknown_caller_is_no_match_or_204_as_text() {
    let app = spawn_app().await;
    let c = app.connector().await;

    let (status, _, body) = ask(&app, &c, "caller_id=8611795988").await;
    assert_eq!(
        (status, json_of(&body)),
        (
            200,
            json!({"Status": "Success", "Match": false, "Reason": "NoLead"})
        )
    );
    let (status, _, body) = ask(&app, &c, "caller_id=8611795988&format=text").await;
    assert_eq!((status, body.as_str()), (204, ""));
    let ownerless = app.create_lead(json!({"phone": "9000000001"})).await;
    let (_, _, body) = ask(&app, &c, "caller_id=9000000001").await;
    assert_eq!(json_of(&body)["Reason"], "NoOwner", "{ownerless}");
}

#[tokio::test]
async fn opportunity_routing_goes_to_the_open_opportunitys_owner() {
    let app = spawn_app().await;
    let c = app.connector().await;
    let (lead_owner, _) = app.agent("asha@example.com", &["101"]).await;
    let (opp_owner, _) = app.agent("ravi@example.com", &["102"]).await;
    let lead = app
        .create_lead(json!({"phone": "8611795988", "owner_id": lead_owner}))
        .await;
    app.admin_post(
        "/api/v1/opportunities",
        json!({"lead_id": lead, "name": "Renewal", "owner_id": opp_owner}),
    )
    .await;
    app.admin_post(
        "/api/v1/opportunities",
        json!({"lead_id": lead, "name": "Old", "owner_id": lead_owner, "status": "lost"}),
    )
    .await;

    let (_, _, by_lead) = ask(&app, &c, "caller_id=8611795988").await;
    let (_, _, by_opp) = ask(&app, &c, "caller_id=8611795988&route=opportunity").await;

    assert_eq!(json_of(&by_lead)["OwnerId"], lead_owner.as_str());
    assert_eq!(json_of(&by_opp)["OwnerId"], opp_owner.as_str());
    assert_eq!(json_of(&by_opp)["OwnerNumber"], "102");
}

#[tokio::test]
async fn an_owner_outside_the_connectors_teams_or_inactive_is_not_returned() {
    let app = spawn_app().await;
    let _default = app.connector().await;
    let north = app.create_connector(json!({"name": "North"})).await;
    let team = app
        .admin_post("/api/v1/teams", json!({"name": "North"}))
        .await;
    app.admin(
        Method::PUT,
        &format!("/api/v1/connectors/{}/teams", north.id),
        Some(json!({"team_ids": [team["id"]]})),
    )
    .await;
    let (outsider, _) = app.agent("asha@example.com", &["101"]).await;
    app.create_lead(json!({"phone": "8611795988", "owner_id": outsider}))
        .await;

    let (_, _, body) = ask(&app, &north, "caller_id=8611795988").await;
    assert_eq!(json_of(&body)["Reason"], "OwnerNotInConnectorTeams");

    app.admin(
        Method::PATCH,
        &format!("/api/v1/users/{outsider}"),
        Some(json!({"active": false})),
    )
    .await;
    let (_, _, body) = ask(&app, &north, "caller_id=8611795988").await;
    assert_eq!(json_of(&body)["Reason"], "OwnerInactive");
}

#[tokio::test]
async fn bad_route_questions_name_the_parameter() {
    let app = spawn_app().await;
    let c = app.connector().await;
    let other = app.create_connector(json!({"name": "Other"})).await;
    app.admin_post(
        &format!("/api/v1/connectors/{}/virtual-numbers", other.id),
        json!({"number": "08069000000"}),
    )
    .await;

    for (query, status, code, field) in [
        ("", 422, "MandatoryFieldMissing", "caller_id"),
        ("caller_id=12", 422, "InvalidField", "caller_id"),
        (
            "caller_id=8611795988&virtual_number=08069000000",
            422,
            "InvalidField",
            "virtual_number",
        ),
        (
            "caller_id=8611795988&route=owner",
            422,
            "InvalidField",
            "route",
        ),
        (
            "caller_id=8611795988&format=xml",
            422,
            "InvalidField",
            "format",
        ),
    ] {
        let (got, _, body) = ask(&app, &c, query).await;
        let v = json_of(&body);
        assert_eq!(
            (
                got,
                v["ExceptionType"].as_str().unwrap(),
                v["Field"].as_str().unwrap()
            ),
            (status, code, field),
            "{query}"
        );
    }
}
