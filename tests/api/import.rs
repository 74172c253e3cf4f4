//! SPEC 6 "Lead import" — `POST /api/v1/leads/import` (CSV and NDJSON, streamed under
//! `import.max_bytes`) and the `import-leads` command.

use crate::helpers::{TestApp, spawn_app, spawn_app_with};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const CSV: &str = "text/csv";
const NDJSON: &str = "application/x-ndjson";

impl TestApp {
    async fn import(&self, content_type: &str, body: impl Into<String>) -> (u16, Value) {
        let res = self
            .client
            .post(self.url("/api/v1/leads/import"))
            .bearer_auth(&self.admin_token)
            .header("content-type", content_type)
            .body(body.into())
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    /// Every lead, through every page of `GET /api/v1/leads`.
    async fn all_leads(&self) -> Vec<Value> {
        let mut all = Vec::new();
        let mut path = "/api/v1/leads?limit=500".to_owned();
        loop {
            let page = self.admin_get(&path).await;
            all.extend(page["items"].as_array().unwrap().iter().cloned());
            match page["next_cursor"].as_str() {
                Some(c) => path = format!("/api/v1/leads?limit=500&cursor={c}"),
                None => return all,
            }
        }
    }

    async fn lead_with_phone(&self, phone: &str) -> Value {
        let found = self.leads_with_phone(phone).await;
        assert_eq!(found.len(), 1, "leads with {phone}: {found:?}");
        found[0].clone()
    }
}

fn row_errors(report: &Value) -> Vec<(u64, Value)> {
    report["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["row"].as_u64().unwrap(), e["field"].clone()))
        .collect()
}

/// 1,000 data rows (lines 2..=1001); lines 101, 502 and 903 are bad: an email without
/// `@`, a phone that is not a number, an owner that does not exist.
fn thousand_rows(owner: &str) -> String {
    let mut csv = String::from(
        "first_name,last_name,email,phone,secondary_numbers,owner_id,stage,fields.Budget\n",
    );
    for i in 0..1000u64 {
        let line = i + 2;
        let email = if line == 101 {
            "lead101.example.com".to_owned()
        } else {
            format!("lead{line}@example.com")
        };
        let phone = if line == 502 {
            "call me".to_owned()
        } else {
            format!("{}", 9_000_000_000 + i)
        };
        let owner = if line == 903 {
            uuid::Uuid::new_v4().to_string()
        } else {
            owner.to_owned()
        };
        let secondary = format!("{};+91 {}", 9_100_000_000 + i, 9_200_000_000 + i);
        csv.push_str(&format!(
            "Lead,{line},{email},{phone},{secondary},{owner},New,\"{i},000\"\n"
        ));
    }
    csv
}

#[tokio::test]
async fn a_csv_keeps_its_valid_rows_and_names_the_line_and_field_of_each_bad_one() {
    let app = spawn_app().await;
    let (owner, _) = app.agent("owner@example.com", &["101"]).await;
    let csv = thousand_rows(&owner);
    assert!(
        csv.len() > app.settings.server.max_body_bytes,
        "the file must be larger than the other routes' body limit"
    );

    let (status, report) = app.import(CSV, csv.clone()).await;

    assert_eq!(status, 200, "{report}");
    assert_eq!(
        (&report["created"], &report["updated"], &report["failed"]),
        (&json!(997), &json!(0), &json!(3))
    );
    assert_eq!(
        row_errors(&report),
        vec![
            (101, json!("email")),
            (502, json!("phone")),
            (903, json!("owner_id"))
        ]
    );
    assert!(
        report["errors"][2]["message"]
            .as_str()
            .unwrap()
            .contains("does not exist")
    );
    assert_eq!(app.all_leads().await.len(), 997);
    let lead = app.lead_with_phone("9000000010").await;
    assert_eq!(lead["first_name"], "Lead");
    assert_eq!(lead["last_name"], "12");
    assert_eq!(lead["owner_id"], owner.as_str());
    assert_eq!(
        lead["secondary_numbers"],
        json!(["+919100000010", "+919200000010"])
    );
    assert_eq!(lead["fields"], json!({"Budget": "10,000"}));
    assert!(app.leads_with_phone("9000000901").await.is_empty());
}

#[tokio::test]
async fn importing_the_same_file_again_updates_every_lead_and_duplicates_none() {
    let app = spawn_app().await;
    let (owner, _) = app.agent("owner@example.com", &["101"]).await;
    let csv = thousand_rows(&owner);
    let (status, first) = app.import(CSV, csv.clone()).await;
    assert_eq!(status, 200, "{first}");

    let (status, again) = app.import(CSV, csv).await;

    assert_eq!(status, 200, "{again}");
    assert_eq!(
        (&again["created"], &again["updated"], &again["failed"]),
        (&json!(0), &json!(997), &json!(3))
    );
    assert_eq!(app.all_leads().await.len(), 997);
    app.lead_with_phone("9000000499").await;
    app.lead_with_phone("+91 92000 00499").await;
}

#[tokio::test]
async fn ndjson_lines_are_leads_as_post_takes_them() {
    let app = spawn_app().await;
    let body = [
        json!({"first_name": "Asha", "phone": "+91-8611795988", "secondary_numbers": ["08611795989"], "fields": {"City": "Pune"}, "external_id": "crm-1"}).to_string(),
        String::new(),
        json!({"first_name": "Ravi", "secondary_numbers": ["8611795990", "12"]}).to_string(),
        "{\"first_name\": ".to_owned(),
        json!({"first_name": "Meera", "nickname": "M"}).to_string(),
        json!(["not", "an", "object"]).to_string(),
        json!({"email": "meera@example.com", "stage": "Won"}).to_string(),
    ]
    .join("\n");

    let (status, report) = app.import(NDJSON, body).await;

    assert_eq!(status, 200, "{report}");
    assert_eq!(
        (&report["created"], &report["updated"], &report["failed"]),
        (&json!(2), &json!(0), &json!(4))
    );
    assert_eq!(
        row_errors(&report),
        vec![
            (3, json!("secondary_numbers[1]")),
            (4, Value::Null),
            (5, json!("nickname")),
            (6, Value::Null)
        ]
    );
    let asha = app.lead_with_phone("8611795988").await;
    assert_eq!(asha["phone"], "+918611795988");
    assert_eq!(asha["secondary_numbers"], json!(["+918611795989"]));
    assert_eq!(asha["fields"], json!({"City": "Pune"}));
    assert_eq!(asha["external_id"], "crm-1");
    assert_eq!(app.all_leads().await.len(), 2);
}

#[tokio::test]
async fn a_row_matches_the_only_lead_with_its_email_whatever_the_case() {
    let app = spawn_app().await;
    let asha = app
        .create_lead(json!({"first_name": "Asha", "email": "Asha@Example.com", "phone": "8611795988", "fields": {"City": "Pune"}}))
        .await;
    for _ in 0..2 {
        app.create_lead(json!({"first_name": "Twin", "email": "twin@example.com"}))
            .await;
    }

    let (status, report) = app
        .import(
            CSV,
            "email,stage,fields.Budget\nasha@EXAMPLE.com,Won,10k\nTWIN@example.com,Lost,\n",
        )
        .await;

    assert_eq!(status, 200, "{report}");
    // Asha is updated; two leads share the twins' email, so that row makes a third
    assert_eq!(
        (&report["created"], &report["updated"], &report["failed"]),
        (&json!(1), &json!(1), &json!(0))
    );
    let lead = app.admin_get(&format!("/api/v1/leads/{asha}")).await;
    assert_eq!(lead["stage"], "Won");
    assert_eq!(lead["email"], "asha@EXAMPLE.com");
    // what the row does not give is kept; custom fields merge by key
    assert_eq!(lead["first_name"], "Asha");
    assert_eq!(lead["phone"], "+918611795988");
    assert_eq!(lead["fields"], json!({"City": "Pune", "Budget": "10k"}));
    assert_eq!(app.all_leads().await.len(), 4);
}

#[tokio::test]
async fn external_id_matches_first_and_an_update_reindexes_the_numbers() {
    let app = spawn_app().await;
    let id = app
        .create_lead(json!({"first_name": "Old", "email": "old@example.com", "phone": "8611795988", "secondary_numbers": ["8611795989"], "external_id": "crm-7"}))
        .await;

    let (status, report) = app
        .import(
            CSV,
            "external_id,email,secondary_numbers\ncrm-7,new@example.com,8611795990;8611795991\n",
        )
        .await;

    assert_eq!(status, 200, "{report}");
    assert_eq!(report["updated"], 1);
    let lead = app.admin_get(&format!("/api/v1/leads/{id}")).await;
    assert_eq!(lead["email"], "new@example.com");
    assert!(app.leads_with_phone("8611795989").await.is_empty());
    assert_eq!(app.lead_with_phone("8611795991").await["id"], id.as_str());
    assert_eq!(app.lead_with_phone("8611795988").await["id"], id.as_str());
    assert_eq!(app.all_leads().await.len(), 1);
}

#[tokio::test]
async fn quoted_csv_values_may_hold_commas_quotes_and_line_breaks() {
    let app = spawn_app().await;
    let csv = "first_name,last_name,phone,fields.Notes\r\n\
               \"Doe, Jr.\",\"The \"\"Boss\"\"\",8611795988,\"line one\r\nline two\"\r\n\
               Ravi,,8611795989,\"a\nb\nc\"\r\n\
               Bad,,not a number,\r\n";

    let (status, report) = app.import(CSV, csv).await;

    assert_eq!(status, 200, "{report}");
    assert_eq!(report["created"], 2);
    // the bad row starts on line 7: the quoted notes above span lines 2-3 and 4-6
    assert_eq!(row_errors(&report), vec![(7, json!("phone"))]);
    let doe = app.lead_with_phone("8611795988").await;
    assert_eq!(doe["first_name"], "Doe, Jr.");
    assert_eq!(doe["last_name"], "The \"Boss\"");
    assert_eq!(doe["fields"]["Notes"], "line one\r\nline two");
    assert_eq!(
        app.lead_with_phone("8611795989").await["last_name"],
        Value::Null
    );
}

#[tokio::test]
async fn an_unknown_column_is_refused_before_any_row_is_imported() {
    let app = spawn_app().await;

    let (status, body) = app
        .import(
            CSV,
            "first_name,phone,favourite_colour\nAsha,8611795988,blue\n",
        )
        .await;

    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "validation_failed");
    assert_eq!(body["error"]["field"], "favourite_colour");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("favourite_colour")
    );
    assert_eq!(app.all_leads().await.len(), 0);
}

#[tokio::test]
async fn a_body_over_import_max_bytes_is_413_and_imports_nothing() {
    let app = spawn_app_with(|s| s.import.max_bytes = 1000).await;
    let mut csv = String::from("first_name,phone\n");
    for i in 0..100 {
        csv.push_str(&format!("Lead,{}\n", 9_000_000_000u64 + i));
    }
    assert!(csv.len() > 1000);

    let (status, body) = app.import(CSV, csv).await;

    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"]["code"], "payload_too_large");
    assert_eq!(app.all_leads().await.len(), 0);
}

#[tokio::test]
async fn a_chunked_body_is_cut_at_import_max_bytes() {
    let app = spawn_app_with(|s| s.import.max_bytes = 1000).await;
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let mut request = format!(
        "POST /api/v1/leads/import HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {}\r\n\
         content-type: text/csv\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n",
        app.admin_token
    );
    let mut chunk = |data: &str| request.push_str(&format!("{:x}\r\n{data}\r\n", data.len()));
    chunk("first_name,phone\n");
    for i in 0..100u64 {
        chunk(&format!("Lead,{}\n", 9_000_000_000 + i));
    }
    request.push_str("0\r\n\r\n");

    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();

    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("payload_too_large"), "{answer}");
    assert_eq!(app.all_leads().await.len(), 0);
}

#[tokio::test]
async fn the_import_needs_the_admin_token_and_a_known_content_type() {
    let app = spawn_app().await;
    let (_, agent) = app.agent("asha@example.com", &["101"]).await;
    let post = |token: Option<&str>, content_type: &str| {
        let mut req = app
            .client
            .post(app.url("/api/v1/leads/import"))
            .header("content-type", content_type)
            .body("first_name\nAsha\n");
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send()
    };

    let none = post(None, CSV).await.unwrap();
    let as_agent = post(Some(&agent), CSV).await.unwrap();
    let json_body = post(Some(&app.admin_token), "application/json")
        .await
        .unwrap();
    let latin1 = post(Some(&app.admin_token), "text/csv; charset=iso-8859-1")
        .await
        .unwrap();

    assert_eq!(none.status().as_u16(), 401);
    let body: Value = none.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthorized");
    assert_eq!(as_agent.status().as_u16(), 403);
    assert_eq!(json_body.status().as_u16(), 415);
    let body: Value = json_body.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unsupported_media_type");
    assert_eq!(latin1.status().as_u16(), 415);
    let (status, _) = app.admin(Method::GET, "/api/v1/leads", None).await;
    assert_eq!(status, 200);
    assert_eq!(app.all_leads().await.len(), 0);
}

#[tokio::test]
async fn the_import_leads_command_imports_a_file_into_the_configured_store() {
    let store = crate::helpers::TestStore::new().await;
    let (dir, db) = (&store.dir, &store.url);
    let file = dir.path().join("leads.csv");
    std::fs::write(
        &file,
        "first_name,email,phone\nAsha,asha@example.com,8611795988\nRavi,ravi@,8611795989\nMeera,meera@example.com,8611795990\n",
    )
    .unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_utc-gateway"))
            .current_dir(dir.path())
            .env("UTC__STORE__URL", db)
            .args(args)
            .output()
            .unwrap()
    };
    let path = file.to_str().unwrap();

    let out = run(&["import-leads", path]);
    let again = run(&["import-leads", path, "--format", "csv"]);
    let missing = run(&["import-leads", "nowhere.csv"]);
    let unknown = run(&["import-leads", path.trim_end_matches(".csv")]);

    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("2 created, 0 updated, 1 failed"),
        "{stdout}"
    );
    assert!(stdout.contains("row 3, field email: "), "{stdout}");
    // not a terminal: no progress on stderr
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&again.stdout);
    assert_eq!(again.status.code(), Some(0));
    assert!(
        stdout.contains("0 created, 2 updated, 1 failed"),
        "{stdout}"
    );
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("nowhere.csv"));
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("--format"));
    let opened = utc_gateway::store::open(db).await.unwrap();
    let leads = opened
        .list_leads(
            &utc_gateway::store::LeadFilter::All,
            &utc_gateway::store::PageRequest {
                limit: 10,
                cursor: None,
            },
        )
        .await
        .unwrap();
    let mut names: Vec<_> = leads
        .items
        .iter()
        .filter_map(|l| l.first_name.clone())
        .collect();
    names.sort();
    assert_eq!(names, ["Asha", "Meera"]);
}

#[tokio::test]
async fn a_nul_character_refuses_its_row_naming_the_field_and_keeps_the_others() {
    let app = spawn_app().await;
    let csv = "first_name,phone,fields.City\nRavi,8611795990,Pune\nMee\u{0}ra,8611795991,Pune\nAsha,8611795992,Pu\u{0}ne\n";
    let ndjson =
        "{\"first_name\":\"Ok\",\"phone\":\"8611795993\"}\n{\"first_name\":\"N\\u0000o\"}\n";

    let (status, csv_report) = app.import(CSV, csv).await;
    let (nd_status, nd_report) = app.import(NDJSON, ndjson).await;

    assert_eq!(status, 200, "{csv_report}");
    assert_eq!(csv_report["created"], 1);
    assert_eq!(
        row_errors(&csv_report),
        vec![(3, json!("first_name")), (4, json!("fields.City"))]
    );
    assert_eq!(nd_status, 200, "{nd_report}");
    assert_eq!(nd_report["created"], 1);
    assert_eq!(row_errors(&nd_report), vec![(2, json!("first_name"))]);
    assert_eq!(app.lead_count().await, 2);
}
