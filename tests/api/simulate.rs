//! `utc-gateway simulate` (the real binary) drives popups and call logs that a connected
//! agent receives.

use crate::helpers::{TestApp, TestConnector, spawn_app};
use serde_json::{Value, json};

async fn simulate(
    app: &TestApp,
    c: &TestConnector,
    args: &[&str],
) -> (std::process::ExitStatus, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_utc-gateway"))
        .arg("simulate")
        .arg("--base")
        .arg(app.url("/"))
        .arg("--access-key")
        .arg(&c.access_key)
        .env("UTC_SIM_SECRET_KEY", &c.secret_key)
        .args(args)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        !stdout.contains(&c.secret_key),
        "the secret key is never printed"
    );
    (out.status, stdout + &String::from_utf8_lossy(&out.stderr))
}

/// Reads frames until `popups` popups and `logs` call_logged frames have arrived.
async fn frames(
    socket: &mut crate::helpers::AgentSocket,
    popups: usize,
    logs: usize,
) -> (Vec<Value>, Vec<Value>) {
    let (mut p, mut l) = (Vec::new(), Vec::new());
    while p.len() < popups || l.len() < logs {
        match socket.next().await {
            crate::helpers::Seen::Frame(f) if f["type"] == "popup" => p.push(f),
            crate::helpers::Seen::Frame(f) if f["type"] == "call_logged" => l.push(f),
            crate::helpers::Seen::Frame(_) => {}
            crate::helpers::Seen::Closed(code) => panic!("socket closed: {code:?}"),
        }
    }
    (p, l)
}

#[tokio::test]
async fn simulate_plays_popups_and_logs_that_the_agent_receives() {
    let app = spawn_app().await;
    let c = app.connector().await;
    app.sales_number(&c).await;
    let (_, token) = app.agent("asha@example.com", &["101"]).await;
    let (mut socket, _) = app.agent_socket(&token, None).await;

    let (status, out) = simulate(
        &app,
        &c,
        &[
            "--calls",
            "4",
            "--rate",
            "50",
            "--agent-number",
            "101",
            "--virtual-number",
            "08069000000",
            "--max-talk-secs",
            "0",
            "--missed-percent",
            "0",
            "--recording-percent",
            "100",
        ],
    )
    .await;

    assert!(status.success(), "{out}");
    let (popups, logs) = frames(&mut socket, 4, 4).await;
    assert!(popups.iter().all(|p| p["popup"]["call"]["tag"] == "Sales"));
    let mut sessions: Vec<&str> = popups
        .iter()
        .map(|p| p["popup"]["call"]["call_session_id"].as_str().unwrap())
        .collect();
    sessions.sort_unstable();
    sessions.dedup();
    assert_eq!(sessions.len(), 4, "four distinct calls");
    for l in &logs {
        let a = &l["activity"];
        assert_eq!(a["status"], "answered");
        let session = a["call_session_id"].as_str().unwrap();
        assert_eq!(
            a["recording_url"],
            format!("https://recordings.example.com/{session}.mp3")
        );
        assert!(sessions.contains(&session));
        assert!(!l["popup_id"].is_null(), "the log reached the call's popup");
    }
    assert!(
        out.contains("4 calls: popups 4 ok (4 delivered, 0 queued)"),
        "{out}"
    );
    assert!(
        out.contains("logs 4 ok (0 missed, 4 with a recording)"),
        "{out}"
    );
    assert_eq!(app.all_activities().await.len(), 4);
}

#[tokio::test]
async fn simulate_speaks_super_receptionist_and_reports_missed_calls() {
    let app = spawn_app().await;
    let c = app
        .create_connector(json!({"name": "Knowlarity", "kind": "super_receptionist_v2"}))
        .await;
    let (_, token) = app.agent("ravi@example.com", &["9876543210"]).await;
    let (mut socket, _) = app.agent_socket(&token, None).await;

    let (status, out) = simulate(
        &app,
        &c,
        &[
            "--calls",
            "2",
            "--rate",
            "50",
            "--format",
            "super-receptionist-v2",
            "--agent-number",
            "09876543210",
            "--caller",
            "08611795988",
            "--max-talk-secs",
            "0",
            "--missed-percent",
            "100",
        ],
    )
    .await;

    assert!(status.success(), "{out}");
    let (_, logs) = frames(&mut socket, 2, 2).await;
    assert!(logs.iter().all(|l| l["activity"]["status"] == "missed"));
    assert!(
        out.contains("logs 2 ok (2 missed, 0 with a recording)"),
        "{out}"
    );
    assert_eq!(
        app.leads_with_phone("+918611795988").await.len(),
        1,
        "one caller, one lead"
    );
}

#[tokio::test]
async fn simulate_reports_refused_requests_and_fails() {
    let app = spawn_app().await;
    let c = app.connector().await;
    let wrong = TestConnector {
        secret_key: "not-the-secret".into(),
        ..c
    };

    let (status, out) = simulate(&app, &wrong, &["--calls", "1", "--max-talk-secs", "0"]).await;

    assert!(!status.success());
    assert!(out.contains("401 Unauthorized"), "{out}");
    assert!(out.contains("2 request(s) failed"), "{out}");
}
