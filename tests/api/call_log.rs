//! SPEC 2.2 and 2.5 — call logs, generic and Super Receptionist V2.

use crate::helpers::{TestApp, TestConnector, spawn_app};
use serde_json::{Value, json};

const JSON: &str = "application/json";

/// The LGTC documentation's sample call, for a connector in Asia/Kolkata.
fn lgtc_sample(session: &str) -> Value {
    json!({
        "SourceNumber": "+91-8611795988",
        "DestinationNumber": "101",
        "DisplayNumber": "+91-8069000000",
        "StartTime": "2017-07-07 18:26:38",
        "EndTime": "2017-07-07 18:28:38",
        "CallDuration": 120,
        "Status": "Answered",
        "CallNotes": "Customer asked for a demo",
        "ResourceURL": "",
        "Direction": "Inbound",
        "CallSessionId": session,
        "CallerName": "Ravi",
        "CallerCity": "Bengaluru",
        "CallerSource": "Google Ads",
    })
}

async fn setup() -> (TestApp, TestConnector, String, String) {
    let app = spawn_app().await;
    let c = app
        .create_connector(
            json!({"name": "Exotel", "timezone": "Asia/Kolkata", "lead_source": "Telephony"}),
        )
        .await;
    app.sales_number(&c).await;
    let (agent, token) = app.agent("asha@example.com", &["101"]).await;
    (app, c, agent, token)
}

#[tokio::test]
async fn a_generic_log_is_stored_and_read_back_with_utc_times() {
    let (app, c, agent, _) = setup().await;

    let (status, out) = app
        .post_call_log(&c, &lgtc_sample("s-1").to_string(), JSON)
        .await;

    assert_eq!(status, 200, "{out}");
    assert_eq!(out["Status"], "Success");
    let m = &out["Message"];
    assert_eq!(
        (m["Duplicate"].clone(), m["LeadCreated"].clone()),
        (json!(false), json!(true))
    );
    assert_eq!(m["Message"], "Call logged successfully");
    let a = &app.activities(m["LeadId"].as_str().unwrap()).await[0];
    assert_eq!(a["id"], m["Id"]);
    assert_eq!(a["kind"], "inbound_call");
    assert_eq!(a["started_at"], "2017-07-07T12:56:38.000Z");
    assert_eq!(a["ended_at"], "2017-07-07T12:58:38.000Z");
    assert_eq!(a["duration_secs"], 120);
    assert_eq!(a["status"], "answered");
    assert_eq!(a["notes"], "Customer asked for a demo");
    assert_eq!(a["recording_url"], Value::Null);
    assert_eq!(a["user_id"], agent.as_str());
    assert_eq!(a["connector_id"], c.id.as_str());
    assert_eq!(a["call_session_id"], "s-1");
    assert_eq!(a["data"]["CallerCity"], "Bengaluru");
    let lead = app
        .admin_get(&format!("/api/v1/leads/{}", m["LeadId"].as_str().unwrap()))
        .await;
    assert_eq!(lead["source"], "Google Ads");
    assert_eq!(lead["origin"], "Sales");
    assert_eq!(lead["first_name"], "Ravi");
    assert_eq!(lead["phone"], "+918611795988");
}

#[tokio::test]
async fn the_same_log_posted_three_times_at_once_gives_one_activity() {
    let (app, c, _, _) = setup().await;
    let body = lgtc_sample("s-1").to_string();

    let (a, b, d) = tokio::join!(
        app.post_call_log(&c, &body, JSON),
        app.post_call_log(&c, &body, JSON),
        app.post_call_log(&c, &body, JSON)
    );

    let answers = [a, b, d];
    assert!(answers.iter().all(|(s, _)| *s == 200));
    let ids: Vec<&Value> = answers.iter().map(|(_, o)| &o["Message"]["Id"]).collect();
    assert!(ids.iter().all(|id| *id == ids[0]));
    let fresh = answers
        .iter()
        .filter(|(_, o)| o["Message"]["Duplicate"] == false)
        .count();
    assert_eq!(fresh, 1, "exactly one answer created it");
    assert_eq!(app.all_activities().await.len(), 1);
    assert_eq!(app.lead_count().await, 1);
    app.telephony_logs("endpoint=call_log&outcome=duplicate", 2)
        .await;
}

#[tokio::test]
async fn a_second_log_with_a_recording_updates_the_activity() {
    let (app, c, _, _) = setup().await;
    app.post_call_log(&c, &lgtc_sample("s-1").to_string(), JSON)
        .await;
    let mut later = lgtc_sample("s-1");
    later["ResourceURL"] = json!("https://recordings.example/s-1.mp3");
    later["CallNotes"] = json!("");
    later["Direction"] = json!("Outbound");
    later["SourceNumber"] = json!("101");
    later["DestinationNumber"] = json!("9000000009");

    let (status, out) = app.post_call_log(&c, &later.to_string(), JSON).await;

    assert_eq!(status, 200, "{out}");
    assert_eq!(out["Message"]["Duplicate"], true);
    assert_eq!(out["Message"]["Message"], "Call log updated");
    let all = app.all_activities().await;
    assert_eq!(all.len(), 1);
    assert_eq!(
        all[0]["recording_url"],
        "https://recordings.example/s-1.mp3"
    );
    assert_eq!(
        all[0]["notes"], "Customer asked for a demo",
        "an empty value keeps the old one"
    );
    assert_eq!(
        all[0]["kind"], "inbound_call",
        "the direction never changes"
    );
    assert_eq!(all[0]["lead_id"], out["Message"]["LeadId"]);
}

#[tokio::test]
async fn a_log_without_a_call_session_is_stored_and_never_deduplicated() {
    let (app, c, _, _) = setup().await;
    let mut body = lgtc_sample("x");
    body.as_object_mut().unwrap().remove("CallSessionId");

    for _ in 0..2 {
        let (status, out) = app.post_call_log(&c, &body.to_string(), JSON).await;
        assert_eq!(
            (status, out["Message"]["Duplicate"].clone()),
            (200, json!(false))
        );
    }

    assert_eq!(app.all_activities().await.len(), 2);
}

#[tokio::test]
async fn a_caller_on_a_secondary_number_creates_no_lead() {
    let (app, c, _, _) = setup().await;
    let lead = app.create_lead(json!({"first_name": "Meera", "phone": "9000000001", "secondary_numbers": ["8611795988"]})).await;

    let (_, out) = app
        .post_call_log(&c, &lgtc_sample("s-1").to_string(), JSON)
        .await;

    assert_eq!(out["Message"]["LeadId"], lead.as_str());
    assert_eq!(out["Message"]["LeadCreated"], false);
    assert_eq!(app.lead_count().await, 1);
}

#[tokio::test]
async fn an_opportunity_carried_only_by_the_popup_lands_the_activity_on_it() {
    let (app, c, _, _) = setup().await;
    let lead = app
        .create_lead(json!({"first_name": "Meera", "phone": "8611795988"}))
        .await;
    let opp = app
        .admin_post(
            "/api/v1/opportunities",
            json!({"lead_id": lead, "name": "Annual plan"}),
        )
        .await;
    let popup = json!({"SourceNumber": "8611795988", "DestinationNumber": "101", "Direction": "Inbound",
        "CallSessionId": "s-1", "OpportunityId": opp["id"]});
    let (status, _) = app.post_popup(&c, &popup.to_string()).await;
    assert_eq!(status, 200);

    let (_, out) = app
        .post_call_log(&c, &lgtc_sample("s-1").to_string(), JSON)
        .await;

    let a = app
        .admin_get(&format!(
            "/api/v1/activities?opportunity_id={}",
            opp["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(a["items"].as_array().unwrap().len(), 1);
    assert_eq!(a["items"][0]["id"], out["Message"]["Id"]);
    assert_eq!(a["items"][0]["opportunity_id"], opp["id"]);
}

#[tokio::test]
async fn every_invalid_field_is_named_and_nothing_is_written() {
    let (app, c, _, _) = setup().await;
    let unknown = uuid::Uuid::new_v4().to_string();
    let with = |key: &str, value: Value| {
        let mut b = lgtc_sample("bad");
        b[key] = value;
        b.to_string()
    };
    let without = |key: &str| {
        let mut b = lgtc_sample("bad");
        b.as_object_mut().unwrap().remove(key);
        b.to_string()
    };
    let cases: Vec<(String, u16, &str, Value)> = vec![
        ("[1, 2]".into(), 400, "InvalidRequest", Value::Null),
        (
            "{\"StartTime\": ".into(),
            400,
            "InvalidRequest",
            Value::Null,
        ),
        (
            without("DisplayNumber"),
            422,
            "MandatoryFieldMissing",
            json!("DisplayNumber"),
        ),
        (
            without("StartTime"),
            422,
            "MandatoryFieldMissing",
            json!("StartTime"),
        ),
        (
            without("EndTime"),
            422,
            "MandatoryFieldMissing",
            json!("EndTime"),
        ),
        (
            without("CallDuration"),
            422,
            "MandatoryFieldMissing",
            json!("CallDuration"),
        ),
        (
            without("Status"),
            422,
            "MandatoryFieldMissing",
            json!("Status"),
        ),
        (
            without("Direction"),
            422,
            "MandatoryFieldMissing",
            json!("Direction"),
        ),
        (
            without("SourceNumber"),
            422,
            "MandatoryFieldMissing",
            json!("SourceNumber"),
        ),
        (
            with("StartTime", json!("07/07/2017 18:26")),
            422,
            "InvalidField",
            json!("StartTime"),
        ),
        (
            with("EndTime", json!("2017-07-07 18:20:00")),
            422,
            "InvalidField",
            json!("EndTime"),
        ),
        (
            with("CallDuration", json!(-5)),
            422,
            "InvalidField",
            json!("CallDuration"),
        ),
        (
            with("CallDuration", json!("12s")),
            422,
            "InvalidField",
            json!("CallDuration"),
        ),
        (
            with("CallDuration", json!(12.5)),
            422,
            "InvalidField",
            json!("CallDuration"),
        ),
        (
            with("Status", json!("Dropped")),
            422,
            "InvalidField",
            json!("Status"),
        ),
        (
            with("Direction", json!("Sideways")),
            422,
            "InvalidField",
            json!("Direction"),
        ),
        (
            with("SourceNumber", json!("12")),
            422,
            "InvalidField",
            json!("SourceNumber"),
        ),
        (
            with("DisplayNumber", json!("abc")),
            422,
            "InvalidField",
            json!("DisplayNumber"),
        ),
        (
            with("UserId", json!(unknown)),
            404,
            "UserNotFound",
            json!("UserId"),
        ),
        (
            with("LeadId", json!(unknown)),
            404,
            "LeadNotFound",
            json!("LeadId"),
        ),
        (
            with("OpportunityId", json!("not-an-id")),
            422,
            "InvalidField",
            json!("OpportunityId"),
        ),
        (
            with("Status", json!({"a": 1})),
            422,
            "InvalidField",
            json!("Status"),
        ),
    ];

    for (body, status, code, field) in cases {
        let (got, out) = app.post_call_log(&c, &body, JSON).await;
        assert_eq!(
            (got, out["ExceptionType"].as_str().unwrap_or_default()),
            (status, code),
            "{body}: {out}"
        );
        assert_eq!(out["Field"], field, "{body}");
    }

    assert!(app.all_activities().await.is_empty());
    assert_eq!(app.lead_count().await, 0);
}

#[tokio::test]
async fn super_receptionist_json_and_form_bodies_equal_the_generic_log() {
    let app = spawn_app().await;
    let generic = app
        .create_connector(json!({"name": "Generic", "timezone": "Asia/Kolkata"}))
        .await;
    let sr = app.create_connector(json!({"name": "Knowlarity", "kind": "super_receptionist_v2", "timezone": "Asia/Kolkata"})).await;
    let team = app
        .admin_post("/api/v1/teams", json!({"name": "Everyone"}))
        .await;
    for c in [&generic.id, &sr.id] {
        let (s, _) = app
            .admin(
                reqwest::Method::PUT,
                &format!("/api/v1/connectors/{c}/teams"),
                Some(json!({"team_ids": [team["id"]]})),
            )
            .await;
        assert_eq!(s, 200);
    }
    let u = app.admin_post("/api/v1/users", json!({"name": "Asha", "email": "asha@example.com", "phone_numbers": ["101"], "team_ids": [team["id"]]})).await;
    let generic_body = |session: &str| {
        json!({"SourceNumber": "8611795988", "DestinationNumber": "101", "DisplayNumber": "8069000000",
            "StartTime": "2016-09-27 09:19:44", "EndTime": "2016-09-27 09:20:14", "CallDuration": "30",
            "Status": "Answered", "ResourceURL": "https://rec/1.mp3", "Direction": "inbound", "CallSessionId": session})
        .to_string()
    };
    let sr_json = json!({"caller_id": "+918611795988", "agent_number": "101", "dispnumber": "+918069000000",
        "callid": "sr-json", "call_type": "incoming", "start_time": "2016-09-27 03:49:44+00:00",
        "call_duration": "30", "resource_url": "https://rec/1.mp3", "hangup_cause": "900", "extension": "1"})
    .to_string();
    let sr_form = "caller_id=%2B918611795988&destination=101&dispnumber=%2B918069000000&callid=sr-form&call_type=Incoming\
        &start_time=2016-09-27+03%3A49%3A44%2B00%3A00&end_time=2016-09-27+03%3A50%3A14%2B00%3A00&call_duration=30\
        &resource_url=https%3A%2F%2Frec%2F1.mp3";

    let g = app
        .post_call_log(&generic, &generic_body("generic"), JSON)
        .await;
    let j = app.post_call_log(&sr, &sr_json, JSON).await;
    let f = app
        .post_call_log(&sr, sr_form, "application/x-www-form-urlencoded")
        .await;

    for (status, out) in [&g, &j, &f] {
        assert_eq!(*status, 200, "{out}");
    }
    let lead = g.1["Message"]["LeadId"].as_str().unwrap();
    let acts = app.activities(lead).await;
    assert_eq!(acts.len(), 3);
    let columns = |a: &Value| {
        let mut a = a.clone();
        let m = a.as_object_mut().unwrap();
        for k in [
            "id",
            "data",
            "created_at",
            "connector_id",
            "call_session_id",
        ] {
            m.remove(k);
        }
        a
    };
    assert_eq!(columns(&acts[0]), columns(&acts[1]));
    assert_eq!(columns(&acts[0]), columns(&acts[2]));
    assert_eq!(columns(&acts[0])["user_id"], u["id"]);
    assert_eq!(columns(&acts[0])["started_at"], "2016-09-27T03:49:44.000Z");
    let sr_data = acts
        .iter()
        .find(|a| a["call_session_id"] == "sr-json")
        .unwrap();
    assert_eq!(sr_data["data"]["hangup_cause"], "900");
}

#[tokio::test]
async fn both_tabs_of_the_agent_hear_of_the_logged_call() {
    let (app, c, _, token) = setup().await;
    let (mut tab1, _) = app.agent_socket(&token, None).await;
    let (mut tab2, _) = app.agent_socket(&token, None).await;
    let popup = app.popup(&c, "8611795988", "101", "s-1").await;
    tab1.expect("popup").await;
    tab2.expect("popup").await;

    let (_, out) = app
        .post_call_log(&c, &lgtc_sample("s-1").to_string(), JSON)
        .await;

    for tab in [&mut tab1, &mut tab2] {
        let f = tab.expect("call_logged").await;
        assert_eq!(f["popup_id"], popup["Id"]);
        assert_eq!(f["activity"]["id"], out["Message"]["Id"]);
        assert_eq!(f["activity"]["status"], "answered");
    }
    // a missed call that was never popped still reaches the agent
    let mut missed = lgtc_sample("s-2");
    missed["Status"] = json!("No Answer");
    app.post_call_log(&c, &missed.to_string(), JSON).await;
    let f = tab1.expect("call_logged").await;
    assert_eq!(f["popup_id"], Value::Null);
    assert_eq!(f["activity"]["status"], "missed");
}

#[tokio::test]
async fn a_restart_between_the_post_and_the_read_loses_nothing() {
    let (app, c, _, token) = setup().await;
    let (_, out) = app
        .post_call_log(&c, &lgtc_sample("s-1").to_string(), JSON)
        .await;

    let app = app.restart().await;

    let a = app.all_activities().await;
    assert_eq!(a.len(), 1);
    assert_eq!(a[0]["id"], out["Message"]["Id"]);
    let mine: Value = app
        .client
        .get(app.url("/api/v1/me/activities"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(mine["items"][0]["id"], out["Message"]["Id"]);
    app.telephony_logs("endpoint=call_log", 1).await;
}
