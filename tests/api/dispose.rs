//! SPEC 4 — dispositions over the socket (and `POST /api/v1/dispositions`).

use crate::helpers::{AgentSocket, TestApp, spawn_app};
use serde_json::{Value, json};

struct Setup {
    app: TestApp,
    connector: crate::helpers::TestConnector,
    token: String,
    tab1: AgentSocket,
    tab2: AgentSocket,
    popup: Value,
}

/// A connector whose form requires a task, an agent with two tabs, and one open popup.
async fn setup() -> Setup {
    let app = spawn_app().await;
    let c = app
        .create_connector(json!({"name": "Exotel", "disposition": {
            "values": ["Interested", "Not interested"],
            "task": {"enabled": true, "mandatory": true},
            "activity": {"enabled": true, "types": ["Demo"]},
            "field_update": {"enabled": true, "fields": ["stage"]}
        }}))
        .await;
    let (_, token) = app.agent("asha@example.com", &["101"]).await;
    let (mut tab1, _) = app.agent_socket(&token, None).await;
    let (mut tab2, _) = app.agent_socket(&token, None).await;
    app.popup(&c, "8611795988", "101", "c1").await;
    let popup = tab1.expect("popup").await["popup"].clone();
    tab2.expect("popup").await;
    Setup {
        app,
        connector: c,
        token,
        tab1,
        tab2,
        popup,
    }
}

fn task() -> Value {
    json!({"subject": "Call back", "due_at": "2030-01-01T10:00:00Z"})
}

#[tokio::test]
async fn a_disposition_outside_the_list_or_without_the_mandatory_task_is_refused_and_changes_nothing()
 {
    let Setup {
        app,
        mut tab1,
        mut tab2,
        popup,
        ..
    } = setup().await;
    let lead_id = popup["lead"]["id"].as_str().unwrap().to_owned();
    let cases = [
        (
            json!({"type": "dispose", "req": "r1", "popup_id": popup["id"], "value": "Maybe", "task": task()}),
            "value",
        ),
        (
            json!({"type": "dispose", "req": "r2", "popup_id": popup["id"], "value": "Interested"}),
            "task",
        ),
        (
            json!({"type": "dispose", "req": "r3", "popup_id": popup["id"], "value": "Interested", "task": task(),
            "fields": {"email": "a@b.c"}}),
            "fields.email",
        ),
        (
            json!({"type": "dispose", "req": "r4", "popup_id": popup["id"], "value": "Interested", "task": task(),
            "lead_id": uuid::Uuid::new_v4().to_string()}),
            "lead_id",
        ),
    ];

    for (frame, field) in cases {
        let req = frame["req"].clone();
        tab1.send(frame).await;
        let r = tab1.expect("result").await;
        assert_eq!(r["req"], req);
        assert_eq!(r["ok"], false);
        assert_eq!(r["error"]["code"], "validation_failed");
        assert_eq!(r["error"]["field"], field);
    }

    assert!(app.activities(&lead_id).await.is_empty());
    let lead = app.admin_get(&format!("/api/v1/leads/{lead_id}")).await;
    assert_eq!(lead["fields"], json!({}));
    assert!(tab2.drain().await.is_empty(), "the other tab saw nothing");
}

#[tokio::test]
async fn an_accepted_disposition_updates_the_lead_records_activities_and_closes_the_popup_in_every_tab()
 {
    let Setup {
        app,
        mut tab1,
        mut tab2,
        popup,
        ..
    } = setup().await;
    let lead_id = popup["lead"]["id"].as_str().unwrap().to_owned();

    tab1.send(
        json!({"type": "dispose", "req": "d1", "popup_id": popup["id"], "value": "Interested",
        "notes": "wants a demo", "task": task(), "activity": {"type": "Demo", "note": "Friday"},
        "fields": {"stage": "Prospect"}}),
    )
    .await;

    let mut saw_result = None;
    let mut frames = Vec::new();
    while saw_result.is_none() || frames.len() < 2 {
        let f = match tab1.next().await {
            crate::helpers::Seen::Frame(f) => f,
            other => panic!("{other:?}"),
        };
        if f["type"] == "result" {
            saw_result = Some(f)
        } else {
            frames.push(f)
        }
    }
    let result = saw_result.unwrap();
    assert_eq!(result["ok"], true, "{result}");
    let activity_id = result["data"]["activity_id"].clone();
    for tab_frames in [
        frames,
        vec![
            tab2.expect("disposition_saved").await,
            tab2.expect("popup_closed").await,
        ],
    ] {
        assert_eq!(tab_frames[0]["type"], "disposition_saved");
        assert_eq!(tab_frames[0]["activity_id"], activity_id);
        assert_eq!(tab_frames[0]["value"], "Interested");
        assert_eq!(tab_frames[1]["type"], "popup_closed");
        assert_eq!(tab_frames[1]["reason"], "disposed");
        assert_eq!(tab_frames[1]["popup_id"], popup["id"]);
    }

    let lead = app.admin_get(&format!("/api/v1/leads/{lead_id}")).await;
    assert_eq!(lead["fields"]["Disposition"], "Interested");
    assert_eq!(lead["stage"], "Prospect");
    let mut kinds: Vec<String> = app
        .activities(&lead_id)
        .await
        .iter()
        .map(|a| a["kind"].as_str().unwrap().to_owned())
        .collect();
    kinds.sort();
    assert_eq!(kinds, ["custom", "disposition", "task"]);
    let disposition = app
        .activities(&lead_id)
        .await
        .into_iter()
        .find(|a| a["kind"] == "disposition")
        .unwrap();
    assert_eq!(disposition["id"], activity_id);
    assert_eq!(disposition["notes"], "wants a demo");
    assert_eq!(disposition["call_session_id"], "c1");
}

#[tokio::test]
async fn a_second_disposition_is_409_and_changes_nothing() {
    let Setup {
        app, token, popup, ..
    } = setup().await;
    let lead_id = popup["lead"]["id"].as_str().unwrap().to_owned();
    let body = json!({"popup_id": popup["id"], "value": "Interested", "task": task()});
    let post = || {
        app.client
            .post(app.url("/api/v1/dispositions"))
            .bearer_auth(&token)
            .json(&body)
            .send()
    };

    assert_eq!(post().await.unwrap().status().as_u16(), 200);
    let again = post().await.unwrap();

    assert_eq!(again.status().as_u16(), 409);
    let out: Value = again.json().await.unwrap();
    assert_eq!(out["error"]["code"], "already_disposed");
    assert_eq!(
        app.activities(&lead_id).await.len(),
        2,
        "one disposition and one task"
    );
}

#[tokio::test]
async fn another_agents_popup_cannot_be_disposed() {
    let Setup { app, popup, .. } = setup().await;
    let (_, other) = app.agent("ravi@example.com", &["102"]).await;

    let res = app
        .client
        .post(app.url("/api/v1/dispositions"))
        .bearer_auth(&other)
        .json(&json!({"popup_id": popup["id"], "value": "Interested", "task": task()}))
        .send()
        .await
        .unwrap();

    assert_eq!(res.status().as_u16(), 404);
    let out: Value = res.json().await.unwrap();
    assert_eq!(out["error"]["code"], "not_found");
}

#[tokio::test]
async fn a_repost_of_a_disposed_popup_changes_nothing_not_even_the_seq() {
    let Setup {
        app,
        connector: c,
        token,
        mut tab1,
        popup,
        ..
    } = setup().await;
    tab1.send(json!({"type": "dispose", "req": "d1", "popup_id": popup["id"], "value": "Interested", "task": task()}))
        .await;
    let seen = tab1.drain().await;
    assert!(
        seen.iter()
            .any(|f| f["type"] == "result" && f["ok"] == true),
        "{seen:?}"
    );
    let (_, before) = app.agent_socket(&token, None).await;

    let again = app.popup(&c, "8611795988", "101", "c1").await;

    assert_eq!(again["Id"], popup["id"]);
    assert_eq!(again["Delivered"], 0);
    assert_eq!(again["Queued"], false);
    assert_eq!(again["Message"], "Popup already closed");
    assert_eq!(
        tab1.drain().await,
        Vec::<Value>::new(),
        "no frame for a closed popup"
    );
    let (_, after) = app.agent_socket(&token, None).await;
    assert_eq!(after["seq"], before["seq"]);
}
