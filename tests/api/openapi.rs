//! The OpenAPI document covers every route, and every documented route is served.

use crate::helpers::spawn_app;
use serde_json::Value;

/// Every route of this version (SPEC 2, 3, 4, 6, 7), as method + path template.
const ROUTES: &[(&str, &str)] = &[
    ("post", "/v2/Telephony.svc/ShowAgentPopup"),
    ("post", "/api/v1/telephony/agent-popup"),
    ("post", "/v2/Telephony.svc/LogCall"),
    ("post", "/api/v1/telephony/call-log"),
    ("get", "/api/v1/telephony/call-route"),
    ("post", "/api/v1/sso"),
    ("post", "/api/v1/sso/exchange"),
    ("get", "/ws"),
    ("get", "/api/v1/me"),
    ("get", "/api/v1/me/connectors"),
    ("get", "/api/v1/me/activities"),
    ("post", "/api/v1/dispositions"),
    ("post", "/api/v1/click-to-call"),
    ("get", "/api/v1/users"),
    ("post", "/api/v1/users"),
    ("get", "/api/v1/users/{id}"),
    ("patch", "/api/v1/users/{id}"),
    ("delete", "/api/v1/users/{id}"),
    ("post", "/api/v1/users/{id}/tokens"),
    ("get", "/api/v1/teams"),
    ("post", "/api/v1/teams"),
    ("get", "/api/v1/teams/{id}"),
    ("patch", "/api/v1/teams/{id}"),
    ("delete", "/api/v1/teams/{id}"),
    ("get", "/api/v1/leads"),
    ("post", "/api/v1/leads"),
    ("post", "/api/v1/leads/import"),
    ("get", "/api/v1/leads/{id}"),
    ("patch", "/api/v1/leads/{id}"),
    ("delete", "/api/v1/leads/{id}"),
    ("get", "/api/v1/opportunities"),
    ("post", "/api/v1/opportunities"),
    ("get", "/api/v1/opportunities/{id}"),
    ("patch", "/api/v1/opportunities/{id}"),
    ("delete", "/api/v1/opportunities/{id}"),
    ("get", "/api/v1/connectors"),
    ("post", "/api/v1/connectors"),
    ("get", "/api/v1/connectors/{id}"),
    ("patch", "/api/v1/connectors/{id}"),
    ("delete", "/api/v1/connectors/{id}"),
    ("post", "/api/v1/connectors/{id}/clone"),
    ("post", "/api/v1/connectors/{id}/default"),
    ("post", "/api/v1/connectors/{id}/rotate-keys"),
    ("get", "/api/v1/connectors/{id}/urls"),
    ("get", "/api/v1/connectors/{id}/virtual-numbers"),
    ("post", "/api/v1/connectors/{id}/virtual-numbers"),
    ("patch", "/api/v1/connectors/{id}/virtual-numbers/{vn}"),
    ("delete", "/api/v1/connectors/{id}/virtual-numbers/{vn}"),
    ("put", "/api/v1/connectors/{id}/teams"),
    ("get", "/api/v1/activities"),
    ("get", "/api/v1/telephony-logs"),
    ("get", "/api/v1/outbox"),
    ("post", "/api/v1/outbox/{id}/retry"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/api/openapi.json"),
    ("get", "/"),
    ("get", "/admin"),
    ("get", "/assets/common.js"),
    ("get", "/assets/console.js"),
    ("get", "/assets/admin.js"),
    ("get", "/assets/style.css"),
];

fn operations(doc: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            out.push((method.clone(), path.clone()));
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn the_openapi_document_describes_exactly_the_routes_served() {
    let app = spawn_app().await;

    let doc: Value = app
        .client
        .get(app.url("/api/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();

    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let mut expected: Vec<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    expected.sort();
    assert_eq!(
        operations(&doc),
        expected,
        "documented operations differ from the routes of this version"
    );

    // every documented operation is served (not the unknown-route or wrong-method answer)
    for (method, path) in operations(&doc) {
        let concrete = path
            .replace("{id}", &uuid::Uuid::new_v4().to_string())
            .replace("{vn}", &uuid::Uuid::new_v4().to_string());
        let res = app
            .client
            .request(method.to_uppercase().parse().unwrap(), app.url(&concrete))
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        let body = res.text().await.unwrap_or_default();
        assert_ne!(status, 405, "{method} {path} is documented but not served");
        assert!(
            !(status == 404 && body.contains("route not found")),
            "{method} {path} is documented but not served"
        );
    }
}

#[tokio::test]
async fn operations_carry_their_schemas_and_security() {
    let app = spawn_app().await;
    let doc: Value = app
        .client
        .get(app.url("/api/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();

    let op = |m: &str, p: &str| doc["paths"][p][m].clone();
    let schema_ref = |v: &Value| v["content"]["application/json"]["schema"].to_string();
    assert!(schema_ref(&op("post", "/api/v1/users")["requestBody"]).contains("UserRequest"));
    assert!(schema_ref(&op("post", "/api/v1/users")["responses"]["201"]).contains("User"));
    assert!(
        schema_ref(&op("post", "/v2/Telephony.svc/LogCall")["requestBody"]).contains("CallLogBody")
    );
    assert!(schema_ref(&op("get", "/api/v1/connectors")["responses"]["200"]).contains("Page"));
    assert_eq!(
        op("get", "/api/v1/users")["security"][0]["admin_token"],
        serde_json::json!([])
    );
    assert_eq!(
        op("post", "/v2/Telephony.svc/ShowAgentPopup")["security"][0]["connector_keys"],
        serde_json::json!([])
    );
    for name in [
        "Lead",
        "Activity",
        "ConnectorRequest",
        "DispositionSettings",
        "TelephonyLogRow",
        "ProviderErrorBody",
    ] {
        assert!(
            doc["components"]["schemas"].get(name).is_some(),
            "schema {name} missing"
        );
    }
    assert_eq!(
        doc["components"]["schemas"]["PhoneNumber"]["type"],
        "string"
    );
    assert_eq!(doc["components"]["schemas"]["LeadId"]["format"], "uuid");
}
