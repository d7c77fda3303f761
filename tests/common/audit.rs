//! The audit API in process, as the tests call it: [`AuditApi`] builds the production router
//! (`mpe_ledger::audit::router`) on a test database and sends requests through it; every JSON
//! body it receives is checked against the schema that the served OpenAPI document gives for that
//! route and status ([`check_schema`]), so a response that drifts from the document fails the test
//! that received it.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, header};
use http_body_util::BodyExt;
use mpe_ledger::audit::{AuditState, router};
use mpe_ledger::config::AuditTokens;
use mpe_ledger::domain::{ChannelId, PaymentChannelData};
use serde_json::Value;
use sqlx::PgPool;
use tokio::sync::watch;
use tower::ServiceExt;

use super::TestDb;
use super::escrow_world::GROUP;

/// The one token the in-process API accepts.
pub const TOKEN: &str = "audit-token-0123456789abcdef";

/// The production router over `pool`, with its own OpenAPI document for the schema checks.
pub struct AuditApi {
    app: axum::Router,
    document: Value,
    _stop: watch::Sender<bool>,
}

impl AuditApi {
    pub async fn new(pool: &PgPool) -> Self {
        let (stop, stopped) = watch::channel(false);
        let tokens = AuditTokens::parse(TOKEN).unwrap();
        let app = router(AuditState::new(pool.clone(), tokens, stopped));
        let mut api = Self { app, document: Value::Null, _stop: stop };
        let (status, document) = api.request("/openapi.json", None).await;
        assert_eq!(status, 200, "{document}");
        api.document = document;
        api
    }

    pub fn document(&self) -> &Value {
        &self.document
    }

    /// `GET path` with the test token; the body is checked against the document.
    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.get_as(path, Some(&format!("Bearer {TOKEN}"))).await
    }

    /// `GET path` with `authorization` as the header (none: no header); checked against the document.
    pub async fn get_as(&self, path: &str, authorization: Option<&str>) -> (u16, Value) {
        let (status, body) = self.request(path, authorization).await;
        let route =
            route_of(&self.document, path).unwrap_or_else(|| panic!("{path} is not in the OpenAPI document"));
        check_schema(&self.document, &route, status, &body)
            .unwrap_or_else(|e| panic!("GET {path} → {status} {body}: {e}"));
        (status, body)
    }

    /// `GET path` expecting 200: the body.
    pub async fn ok(&self, path: &str) -> Value {
        let (status, body) = self.get(path).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    async fn request(&self, path: &str, authorization: Option<&str>) -> (u16, Value) {
        let mut request = Request::get(path);
        if let Some(value) = authorization {
            request = request.header(header::AUTHORIZATION, value);
        }
        let response = self.app.clone().oneshot(request.body(Body::empty()).unwrap()).await.unwrap();
        let status = response.status().as_u16();
        let content_type = response.headers().get(header::CONTENT_TYPE).cloned();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(
            content_type.as_ref().map(|v| v.to_str().unwrap()),
            Some("application/json"),
            "GET {path} → {status}: {}",
            String::from_utf8_lossy(&bytes)
        );
        (status, serde_json::from_slice(&bytes).unwrap())
    }
}

/// How long a test waits for an "as of" point to become final while other tests write.
pub const AS_OF_SETTLE: Duration = Duration::from_secs(20);

/// `GET path` for an as-of answer, asking again while it is 409 (a transaction of another test
/// still running), for at most [`AS_OF_SETTLE`].
pub async fn settled(api: &AuditApi, path: &str) -> (u16, Value) {
    let deadline = Instant::now() + AS_OF_SETTLE;
    loop {
        let (status, body) = api.get(path).await;
        if status != 409 || Instant::now() >= deadline {
            return (status, body);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every event of a channel, read page by page through the API.
pub async fn all_events(api: &AuditApi, channel: ChannelId, page_size: u32) -> (Vec<Value>, usize) {
    let (mut events, mut pages, mut after) = (Vec::new(), 0, None::<String>);
    loop {
        let cursor = after.as_ref().map(|a| format!("&after={a}")).unwrap_or_default();
        let page = api.ok(&format!("/v1/channels/{channel}/events?page_size={page_size}{cursor}")).await;
        pages += 1;
        events.extend(page["events"].as_array().unwrap().iter().cloned());
        match page["next"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => return (events, pages),
        }
    }
}

/// A channel written through the generic channel store (no chain needed): one merge event.
pub async fn stored_channel(db: &TestDb, id: u64) -> ChannelId {
    use mpe_ledger::domain::{Amount, ChannelState, EthAddress, GroupId, Nonce};
    use mpe_ledger::store::ChannelStore;
    let channel = PaymentChannelData {
        channel_id: ChannelId::from(id),
        nonce: Nonce::from(0),
        state: ChannelState::Open,
        sender: EthAddress::from_slice(&[1; 20]).unwrap(),
        recipient: EthAddress::from_slice(&[2; 20]).unwrap(),
        group_id: GroupId(GROUP),
        full_amount: Amount::from(100),
        expiration: 1000u64.into(),
        signer: EthAddress::from_slice(&[1; 20]).unwrap(),
        authorized_amount: Amount::ZERO,
        signature: None,
    };
    let store = mpe_ledger::store::postgres::PgChannelStore::new(db.pool.clone(), db.metrics.clone());
    store.put(&channel).await.unwrap();
    channel.channel_id
}

/// The document's path template that `path` (query ignored) matches, e.g. `/v1/channels/{id}`.
pub fn route_of(document: &Value, path: &str) -> Option<String> {
    let path = path.split('?').next().unwrap();
    let segments: Vec<&str> = path.split('/').collect();
    document["paths"]
        .as_object()?
        .keys()
        .find(|template| {
            let parts: Vec<&str> = template.split('/').collect();
            parts.len() == segments.len()
                && parts.iter().zip(&segments).all(|(p, s)| (p.starts_with('{') && !s.is_empty()) || p == s)
        })
        .cloned()
}

/// Checks `body` against the schema the document gives for `GET route` answering `status`.
pub fn check_schema(document: &Value, route: &str, status: u16, body: &Value) -> Result<(), String> {
    if route == "/openapi.json" {
        return Ok(());
    }
    let responses = &document["paths"][route]["get"]["responses"];
    let response =
        responses.get(status.to_string()).ok_or_else(|| format!("status {status} is not documented"))?;
    let schema = &response["content"]["application/json"]["schema"];
    if schema.is_null() {
        return Err(format!("status {status} has no JSON schema"));
    }
    check(document, schema, body, "$")
}

/// A small JSON Schema check covering what utoipa emits: `$ref`, `oneOf`/`anyOf`/`allOf`, `type`
/// (one or a list, `null` included), `enum`, `properties` with `required` (and no undeclared
/// property where properties are declared), `items`.
fn check(document: &Value, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    if let Some(reference) = schema["$ref"].as_str() {
        let name = reference
            .strip_prefix("#/components/schemas/")
            .ok_or(format!("{at}: unknown $ref {reference}"))?;
        return check(document, &document["components"]["schemas"][name], value, at);
    }
    if let Some(options) = schema["oneOf"].as_array().or(schema["anyOf"].as_array()) {
        let matching = options.iter().filter(|option| check(document, option, value, at).is_ok()).count();
        return if matching >= 1 { Ok(()) } else { Err(format!("{at}: {value} matches none of {schema}")) };
    }
    if let Some(all) = schema["allOf"].as_array() {
        for part in all {
            check(document, part, value, at)?;
        }
    }
    if let Some(options) = schema["enum"].as_array()
        && !options.contains(value)
    {
        return Err(format!("{at}: {value} is not one of {options:?}"));
    }
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(list) => list.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    if !types.is_empty() && !types.iter().any(|t| type_matches(t, value)) {
        return Err(format!("{at}: {value} is not of type {types:?}"));
    }
    if let (Some(properties), Some(object)) = (schema["properties"].as_object(), value.as_object()) {
        for required in schema["required"].as_array().into_iter().flatten().filter_map(Value::as_str) {
            if !object.contains_key(required) {
                return Err(format!("{at}: required property {required} is missing"));
            }
        }
        for (key, item) in object {
            let property = properties.get(key).ok_or_else(|| format!("{at}: undeclared property {key}"))?;
            check(document, property, item, &format!("{at}.{key}"))?;
        }
    }
    if let (Some(items), Some(array)) = (schema.get("items"), value.as_array()) {
        for (index, item) in array.iter().enumerate() {
            check(document, items, item, &format!("{at}[{index}]"))?;
        }
    }
    Ok(())
}

fn type_matches(name: &str, value: &Value) -> bool {
    match name {
        "null" => value.is_null(),
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "boolean" => value.is_boolean(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        _ => false,
    }
}

#[test]
fn the_schema_check_refuses_what_the_schema_does_not_allow() {
    let document = serde_json::json!({"components": {"schemas": {"P": {
        "type": "object", "required": ["a"],
        "properties": {"a": {"type": "string"}, "b": {"type": ["integer", "null"]}}
    }}}});
    let schema = serde_json::json!({"$ref": "#/components/schemas/P"});
    assert!(check(&document, &schema, &serde_json::json!({"a": "x", "b": null}), "$").is_ok());
    assert!(check(&document, &schema, &serde_json::json!({"a": "x", "b": 2}), "$").is_ok());
    assert!(check(&document, &schema, &serde_json::json!({"b": 2}), "$").is_err());
    assert!(check(&document, &schema, &serde_json::json!({"a": 1}), "$").is_err());
    assert!(check(&document, &schema, &serde_json::json!({"a": "x", "c": 1}), "$").is_err());
}
