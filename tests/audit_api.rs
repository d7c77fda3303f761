//! The audit HTTP API (`mpe_ledger::audit`) over a real Postgres (and, for the scripted history,
//! ganache running the real MultiPartyEscrow): exact answers, as-of answers, paging across page
//! boundaries, every refusal, the feed under concurrent writers, the OpenAPI document, and `serve`
//! running the API on its own port only when a token is configured. Every JSON body a test
//! receives is checked against the served OpenAPI document (`common::audit`).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::TestDb;
use common::audit::{AuditApi, TOKEN, all_events, settled, stored_channel};
use common::escrow_world::{GROUP, World};
use common::ganache::Ganache;
use mpe_ledger::store::AtomicStorage;
use mpe_ledger::store::postgres::PgAtomicStorage;
use serde_json::{Value, json};

fn hex(bytes: &[u8]) -> String {
    format!("0x{}", hex::encode(bytes))
}

fn event_types(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["type"].as_str().unwrap()).collect()
}

#[tokio::test]
async fn a_scripted_history_reads_back_exactly_now_and_as_of_any_point() {
    let ganache = Ganache::start().await;
    let world = World::new(&ganache).await;
    let a = world.channel;
    let b = world.open_channel(500, 1000).await;
    let payments = world.payments();
    let claims = world.claims();
    let provider = world.provider();
    // B first, so that A's first event is not at position 1.
    world.pay_on(&payments, b, 0, 10).await;
    // A: three payments, a claim of 30 that lands with 25, a payment at nonce 1.
    for amount in [10, 20, 30] {
        world.pay_on(&payments, a, 0, amount).await;
    }
    let claim = claims.start_claim(a).await.unwrap();
    let claim_tx = world.mpe.channel_claim(provider, a, 25, 30, &claim.signature, false).await;
    let claim_block = world.mpe.block_of(claim_tx).await;
    assert_eq!(claims.record_finished_claims().await.unwrap().len(), 1);
    world.pay_on(&payments, a, 1, 10).await;
    let api = AuditApi::new(&world.db.pool).await;

    // A's events, two per page: four pages, every event once, each linked to the one before.
    let (events, pages) = all_events(&api, a, 2).await;
    assert_eq!(pages, 4);
    assert_eq!(
        event_types(&events),
        [
            "channel_merged_from_chain",
            "payment_accepted",
            "payment_accepted",
            "payment_accepted",
            "claim_started",
            "claim_landed",
            "channel_merged_from_chain",
            "payment_accepted"
        ]
    );
    let stored: Vec<(i64, Vec<u8>, Vec<u8>)> = sqlx::query_as(
        "SELECT position, prev_hash, hash FROM ledger.events WHERE stream = $1 ORDER BY stream_version",
    )
    .bind(format!("channel/{a}"))
    .fetch_all(&world.db.pool)
    .await
    .unwrap();
    for (index, (event, (position, prev_hash, hash))) in events.iter().zip(&stored).enumerate() {
        assert_eq!(event["position"], json!(position));
        assert_eq!(event["stream"], json!(format!("channel/{a}")));
        assert_eq!(event["stream_version"], json!(index + 1));
        assert_eq!(event["prev_hash"], json!(hex(prev_hash)));
        assert_eq!(event["hash"], json!(hex(hash)));
        let previous =
            if index == 0 { hex(&[0; 32]) } else { events[index - 1]["hash"].as_str().unwrap().to_owned() };
        assert_eq!(event["prev_hash"], json!(previous), "event {index} links to the one before");
    }
    let signature =
        |nonce: u64, amount: u64| hex(&world.mpe.sign_payment(world.client(), a, nonce, amount).0);
    assert_eq!(
        events[2]["payload"],
        json!({"type": "payment_accepted", "nonce": "0", "amount": "20", "signature": signature(0, 20)})
    );
    // The same events in one page of the default size.
    let page = api.ok(&format!("/v1/channels/{a}/events")).await;
    assert_eq!(page, json!({"events": events, "next": null}));

    // A now, from the projection.
    let client = world.client().eth_address().to_string();
    let recipient = provider.eth_address().to_string();
    let channel_a = |nonce: &str, full: &str, authorized: &str, signature: Option<String>, version: i64| {
        json!({
            "channel_id": a.to_string(), "nonce": nonce, "state": "open",
            "sender": client, "recipient": recipient, "signer": client, "group_id": hex(&GROUP),
            "full_amount": full, "expiration": world.expiration.to_string(),
            "authorized_amount": authorized, "signature": signature, "stream_version": version,
        })
    };
    let now = api.ok(&format!("/v1/channels/{a}")).await;
    assert_eq!(
        now,
        json!({"channel": channel_a("1", "975", "10", Some(signature(1, 10)), 8), "as_of": null})
    );

    // A as of its third event (the payment of 20), by position and by that event's time.
    let third = events[2]["position"].as_i64().unwrap();
    let (status, body) = settled(&api, &format!("/v1/channels/{a}?as_of_position={third}")).await;
    assert_eq!(status, 200, "{body}");
    let expected = channel_a("0", "1000", "20", Some(signature(0, 20)), 3);
    assert_eq!(
        body,
        json!({"channel": expected, "as_of": {"position": third, "time": null, "last_event_position": third}})
    );
    let time = events[2]["recorded_at"].as_str().unwrap();
    let (status, body) =
        settled(&api, &format!("/v1/channels/{a}?as_of_time={}", time.replace('+', "%2B"))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"channel": expected, "as_of": {"position": null, "time": time, "last_event_position": third}})
    );
    // After the claim started: the nonce moved on, the claimed amount left the full amount.
    let fifth = events[4]["position"].as_i64().unwrap();
    let (_, body) = settled(&api, &format!("/v1/channels/{a}?as_of_position={fifth}")).await;
    assert_eq!(body["channel"], channel_a("1", "970", "0", None, 5));
    // As of the last event: the state now.
    let last = events[7]["position"].as_i64().unwrap();
    let (_, body) = settled(&api, &format!("/v1/channels/{a}?as_of_position={last}")).await;
    assert_eq!(body["channel"], now["channel"]);
    // Before A's first event: no channel yet.
    let first = events[0]["position"].as_i64().unwrap();
    let (status, body) = settled(&api, &format!("/v1/channels/{a}?as_of_position={}", first - 1)).await;
    assert_eq!(
        (status, body),
        (404, json!({"error": format!("channel {a} has no events at or before that point")}))
    );

    // Claims with their status.
    let claims_a = api.ok(&format!("/v1/channels/{a}/claims")).await;
    assert_eq!(
        claims_a,
        json!({"claims": [{
            "nonce": "0", "amount": "30", "signature": hex(claim.signature.as_bytes()),
            "status": "claimed_by_recipient", "transaction_hash": hex(claim_tx.as_slice()),
            "block_number": claim_block.to_string(), "finished_amount": "25", "planned_amount": "30",
        }]})
    );
    assert_eq!(api.ok(&format!("/v1/channels/{b}/claims")).await, json!({"claims": []}));

    // The list, filtered and paged one by one across the boundary.
    let list = api.ok("/v1/channels").await;
    let ids: Vec<&str> =
        list["channels"].as_array().unwrap().iter().map(|c| c["channel_id"].as_str().unwrap()).collect();
    assert_eq!(ids, [a.to_string(), b.to_string()]);
    assert_eq!(list["channels"][0], now["channel"]);
    assert_eq!(list["next"], Value::Null);
    let first_page = api.ok("/v1/channels?page_size=1").await;
    assert_eq!(first_page, json!({"channels": [now["channel"]], "next": a.to_string()}));
    let second_page = api.ok(&format!("/v1/channels?page_size=1&after={a}")).await;
    assert_eq!(second_page["channels"], json!([list["channels"][1]]));
    assert_eq!(second_page["next"], Value::Null);
    let selected = |query: &str| {
        let api = &api;
        let query = query.to_owned();
        async move {
            let page = api.ok(&format!("/v1/channels?{query}")).await;
            page["channels"].as_array().unwrap().len()
        }
    };
    assert_eq!(selected(&format!("sender={client}")).await, 2);
    assert_eq!(selected(&format!("sender={}", client.to_lowercase())).await, 2);
    assert_eq!(selected(&format!("sender={recipient}")).await, 0);
    assert_eq!(selected("state=open").await, 2);
    assert_eq!(selected("state=closed").await, 0);
    assert_eq!(selected(&format!("group={}", hex(&GROUP))).await, 2);
    assert_eq!(selected(&format!("group={}", hex(&[8; 32]))).await, 0);

    // The stream heads are the last hash of each stream.
    let heads = api.ok("/v1/streams").await;
    let stored: Vec<(String, i64, Vec<u8>)> =
        sqlx::query_as("SELECT stream, version, last_hash FROM ledger.streams ORDER BY stream")
            .fetch_all(&world.db.pool)
            .await
            .unwrap();
    let expected: Vec<Value> =
        stored.iter().map(|(s, v, h)| json!({"stream": s, "version": v, "head_hash": hex(h)})).collect();
    assert_eq!(heads, json!({"streams": expected, "next": null}));
    assert_eq!(
        heads["streams"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["stream"] == json!(format!("channel/{a}")))
            .unwrap()["head_hash"],
        events[7]["hash"]
    );
    let one = api.ok("/v1/streams?page_size=1").await;
    assert_eq!(one["next"], expected[0]["stream"]);
    let rest = api
        .ok(&format!("/v1/streams?after={}", expected[0]["stream"].as_str().unwrap().replace('/', "%2F")))
        .await;
    assert_eq!(rest["streams"], json!(expected[1..]));

    // The feed from the start holds every event of the log once.
    let feed = api.ok("/v1/events?page_size=1000").await;
    let count: i64 = world.db.event_count().await;
    assert_eq!(feed["events"].as_array().unwrap().len() as i64, count);
}

#[tokio::test]
async fn bad_parameters_are_400_and_bad_tokens_401_each_with_a_message() {
    let db = TestDb::new().await;
    let id = stored_channel(&db, 7).await;
    let api = AuditApi::new(&db.pool).await;
    let before = (db.event_count().await, db.projections_snapshot().await);

    let unauthorized = json!({"error": "a valid bearer token is required (Authorization: Bearer <token>)"});
    for path in [
        "/v1/channels",
        "/v1/channels/7",
        "/v1/channels/7/events",
        "/v1/channels/7/claims",
        "/v1/events",
        "/v1/streams",
        "/v1/channels/bad?page_size=0",
    ] {
        for authorization in [
            None,
            Some("Bearer wrong-token-0123456789abcdef"),
            Some(TOKEN),
            Some(&format!("Basic {TOKEN}")[..]),
            Some(&format!("Bearer {TOKEN}x")[..]),
        ] {
            let (status, body) = api.get_as(path, authorization).await;
            assert_eq!((status, &body), (401, &unauthorized), "{path} with {authorization:?}");
        }
    }

    let refusals: &[(&str, &str)] = &[
        ("/v1/channels/abc", "channel id \"abc\" is not a decimal channel id"),
        ("/v1/channels/007", "channel id \"007\" is not a decimal channel id"),
        ("/v1/channels/-1/events", "channel id \"-1\" is not a decimal channel id"),
        ("/v1/channels/0x7/claims", "channel id \"0x7\" is not a decimal channel id"),
        ("/v1/channels?page_size=1001", "page_size \"1001\" is not a whole number from 1 to 1000"),
        ("/v1/channels?page_size=0", "page_size \"0\" is not a whole number from 1 to 1000"),
        ("/v1/channels?after=x", "after \"x\" is not a decimal channel id"),
        ("/v1/channels?state=Open", "state \"Open\" is not open or closed"),
        ("/v1/channels?sender=0x12", "sender \"0x12\" is not a 20-byte hex address"),
        ("/v1/channels?group=0x07", "group \"0x07\" is not 0x-hex of 32 bytes"),
        ("/v1/channels/7/events?after=-1", "after \"-1\" is not a stream version"),
        ("/v1/channels/7/events?page_size=5000", "page_size \"5000\" is not a whole number from 1 to 1000"),
        (
            "/v1/channels/7?as_of_position=0",
            "as_of_position \"0\" is not a log position (a whole number from 1)",
        ),
        (
            "/v1/channels/7?as_of_position=1&as_of_time=2026-01-01T00:00:00Z",
            "give as_of_position or as_of_time, not both",
        ),
        ("/v1/events?after=12", "after \"12\" is not a feed cursor (<transaction id>-<position>)"),
        ("/v1/events?after=1-x", "after \"1-x\" is not a feed cursor (<transaction id>-<position>)"),
        ("/v1/events?wait_seconds=31", "wait_seconds \"31\" is not a whole number from 0 to 30"),
        ("/v1/events?page_size=1001", "page_size \"1001\" is not a whole number from 1 to 1000"),
        ("/v1/streams?page_size=-5", "page_size \"-5\" is not a whole number from 1 to 1000"),
    ];
    for (path, message) in refusals {
        let (status, body) = api.get(path).await;
        assert_eq!((status, body), (400, json!({"error": message})), "{path}");
    }
    // Messages that quote a parser's own words: the parameter is named.
    for (path, named) in [
        ("/v1/channels/7?as_of_time=yesterday", "as_of_time \"yesterday\" is not an RFC 3339 time"),
        ("/v1/channels?colour=red", "unknown field `colour`"),
        ("/v1/events?cursor=1-1", "unknown field `cursor`"),
    ] {
        let (status, body) = api.get(path).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert!(body["error"].as_str().unwrap().contains(named), "{path}: {body}");
    }
    for path in [
        "/v1/channels/8",
        "/v1/channels/8/events",
        "/v1/channels/8/claims",
        "/v1/channels/8?as_of_position=1",
    ] {
        let (status, body) = api.get(path).await;
        assert_eq!((status, body), (404, json!({"error": "channel 8 is not in the ledger"})), "{path}");
    }
    assert_eq!(api.ok(&format!("/v1/channels/{id}/claims")).await, json!({"claims": []}));
    // Nothing was written by any of it.
    assert_eq!((db.event_count().await, db.projections_snapshot().await), before);
}

#[tokio::test]
async fn as_of_points_that_a_running_transaction_can_still_change_are_409_until_it_ends() {
    let db = TestDb::new().await;
    let id = stored_channel(&db, 3).await;
    let api = AuditApi::new(&db.pool).await;
    let position: i64 =
        sqlx::query_scalar("SELECT max(position) FROM ledger.events").fetch_one(&db.pool).await.unwrap();
    let (status, body) = settled(&api, &format!("/v1/channels/{id}?as_of_position={position}")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["channel"]["full_amount"], json!("100"));
    // A time in the future is never final: events recorded before it may still come.
    let (status, body) = api.get(&format!("/v1/channels/{id}?as_of_time=2999-01-01T00:00:00Z")).await;
    assert_eq!(status, 409, "{body}");
    assert!(body["error"].as_str().unwrap().contains("a running transaction may still add events"), "{body}");

    // A transaction that holds a transaction id and stays open, as a writer between its insert
    // and its commit.
    let mut open = db.owner().await;
    sqlx::query("BEGIN").execute(&mut open).await.unwrap();
    sqlx::query("SELECT pg_current_xact_id()").execute(&mut open).await.unwrap();
    let (status, body) = api.get(&format!("/v1/channels/{id}?as_of_position={position}")).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(
        body,
        json!({"error": format!("channel {id} as of position {position}: a running transaction may still add events at or before it; positions below {position} are answered now; retry later")})
    );
    let (status, body) = api.get(&format!("/v1/channels/{id}?as_of_time=2000-01-01T00:00:00Z")).await;
    assert_eq!(status, 409, "{body}");
    sqlx::query("COMMIT").execute(&mut open).await.unwrap();
    let (status, body) = settled(&api, &format!("/v1/channels/{id}?as_of_position={position}")).await;
    assert_eq!(status, 200, "{body}");
    // Before the channel existed (as of a time long past): no channel yet.
    let (status, body) = settled(&api, &format!("/v1/channels/{id}?as_of_time=2000-01-01T00:00:00Z")).await;
    assert_eq!(
        (status, body),
        (404, json!({"error": format!("channel {id} has no events at or before that point")}))
    );
}

/// Writers of the feed test: each commits this many events on keys of its own.
const FEED_WRITERS: usize = 8;
const EVENTS_PER_WRITER: usize = 60;

#[tokio::test]
async fn the_feed_yields_every_committed_event_exactly_once_under_eight_concurrent_writers() {
    let db = TestDb::with_pool_size(16).await;
    let api = AuditApi::new(&db.pool).await;
    let expected = FEED_WRITERS * EVENTS_PER_WRITER;
    let mut writers = Vec::new();
    for writer in 0..FEED_WRITERS {
        let storage = PgAtomicStorage::new(db.pool.clone(), db.metrics.clone());
        writers.push(tokio::spawn(async move {
            for n in 0..EVENTS_PER_WRITER {
                // Two keys per writer: streams of several versions, written in turn.
                let key = format!("writer-{writer}/key-{}", n % 2);
                storage.put(key.as_bytes(), format!("{n}").as_bytes()).await.unwrap();
            }
        }));
    }
    // The tailing reader: small pages, long polls, from the start until every event came.
    let mut seen: BTreeMap<i64, (String, i64)> = BTreeMap::new();
    let mut last_version: BTreeMap<String, i64> = BTreeMap::new();
    let mut cursor = "0-0".to_owned();
    let deadline = Instant::now() + Duration::from_secs(120);
    while seen.len() < expected {
        assert!(Instant::now() < deadline, "only {} of {expected} events came", seen.len());
        let page = api.ok(&format!("/v1/events?after={cursor}&page_size=7&wait_seconds=2")).await;
        for event in page["events"].as_array().unwrap() {
            let position = event["position"].as_i64().unwrap();
            let stream = event["stream"].as_str().unwrap().to_owned();
            let version = event["stream_version"].as_i64().unwrap();
            assert!(
                seen.insert(position, (stream.clone(), version)).is_none(),
                "position {position} came twice"
            );
            let previous = last_version.insert(stream.clone(), version).unwrap_or(0);
            assert_eq!(version, previous + 1, "{stream} in version order");
        }
        cursor = page["next"].as_str().unwrap().to_owned();
    }
    for writer in writers {
        writer.await.unwrap();
    }
    // Nothing more comes, and what came is exactly the log.
    let after = api.ok(&format!("/v1/events?after={cursor}&wait_seconds=1")).await;
    assert_eq!(after, json!({"events": [], "next": cursor}));
    let positions: BTreeSet<i64> = sqlx::query_scalar("SELECT position FROM ledger.events")
        .fetch_all(&db.pool)
        .await
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(positions.len(), expected);
    assert_eq!(seen.keys().copied().collect::<BTreeSet<_>>(), positions);
}

#[tokio::test]
async fn every_route_is_in_the_openapi_document_which_is_served_without_a_token() {
    let db = TestDb::new().await;
    let api = AuditApi::new(&db.pool).await;
    let document = api.document();
    assert_eq!(document["openapi"], json!("3.1.0"));
    let paths: BTreeSet<&str> = document["paths"].as_object().unwrap().keys().map(String::as_str).collect();
    let routes = [
        "/v1/channels",
        "/v1/channels/{id}",
        "/v1/channels/{id}/claims",
        "/v1/channels/{id}/events",
        "/v1/events",
        "/v1/streams",
    ];
    assert_eq!(paths, routes.into_iter().collect());
    assert_eq!(
        document["components"]["securitySchemes"]["bearer"],
        json!({"type": "http", "scheme": "bearer"})
    );
    for route in routes {
        let operation = &document["paths"][route]["get"];
        assert_eq!(operation["security"], json!([{"bearer": []}]), "{route}");
        for status in ["200", "400", "401"] {
            assert!(operation["responses"][status].is_object(), "{route} documents {status}");
        }
        // Each route is served (401 without a token, not 404).
        let (status, _) = api.get_as(&route.replace("{id}", "1"), None).await;
        assert_eq!(status, 401, "{route}");
    }
    assert_eq!(document, &mpe_ledger::audit::openapi::document_json());
}

#[tokio::test]
async fn serve_runs_the_api_on_its_own_loopback_port_only_when_a_token_is_configured() {
    use common::e2e::free_port;
    use common::ledger::{Ledger, http_get_at, http_get_with};
    let db = TestDb::new().await;
    stored_channel(&db, 5).await;
    let settings = common::ledger::LedgerSettings::offline("replica-audit");

    // Another loopback address than the public port's: two free ports picked apart may be equal.
    let audit = ("127.0.0.2", free_port());
    let listen = ("MPE_LEDGER_AUDIT_LISTEN", format!("{}:{}", audit.0, audit.1));
    let mut off = Ledger::start_with_env(&db.owner_url, &settings, &[(listen.0, listen.1.clone())]).await;
    assert!(
        off.wait_for_log("audit API off: no audit_tokens configured", 1, Duration::from_secs(5)).await,
        "{}",
        off.log()
    );
    assert!(http_get_at(audit, "/openapi.json", &[]).await.is_err(), "nothing listens on the audit port");
    assert!(off.stop());

    let tokens = ("MPE_LEDGER_AUDIT_TOKENS", format!("{TOKEN},another-token-abcdefghijklmnop"));
    let on = Ledger::start_with_env(
        &db.owner_url,
        &settings,
        &[(listen.0, listen.1.clone()), (tokens.0, tokens.1.clone())],
    )
    .await;
    assert!(on.wait_for_log("serving the audit API", 1, Duration::from_secs(5)).await, "{}", on.log());
    let bearer = format!("Bearer {TOKEN}");
    let (status, body) = http_get_at(audit, "/v1/channels/5", &[("Authorization", &bearer)]).await.unwrap();
    assert_eq!(status, 200, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["channel"]["full_amount"], json!("100"));
    let (status, _) = http_get_at(audit, "/v1/channels/5", &[]).await.unwrap();
    assert_eq!(status, 401);
    let (status, _) =
        http_get_at(audit, "/v1/streams", &[("Authorization", "Bearer another-token-abcdefghijklmnop")])
            .await
            .unwrap();
    assert_eq!(status, 200);
    let (status, document) = http_get_at(audit, "/openapi.json", &[]).await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&document).unwrap(),
        mpe_ledger::audit::openapi::document_json()
    );
    // Never on the public port.
    for path in ["/v1/channels/5", "/openapi.json"] {
        // The public port takes it for a paid call (a gRPC refusal), never for the audit API.
        let (_, body) = http_get_with(on.port, path, &[("Authorization", &bearer)]).await.unwrap();
        assert!(serde_json::from_str::<Value>(&body).is_err(), "{path} on the public port: {body}");
    }
    drop(on);

    // A non-loopback address is refused at start-up, naming the setting.
    let run = common::ledger::run_command(
        &["serve"],
        &[
            ("DATABASE_URL", &db.owner_url),
            ("MPE_LEDGER_AUDIT_LISTEN", "0.0.0.0:7001"),
            ("MPE_LEDGER_AUDIT_TOKENS", TOKEN),
        ],
    )
    .await;
    assert!(!run.success(), "{}", run.stderr);
    assert!(
        run.stderr.contains("invalid setting audit_listen: 0.0.0.0:7001 is not a loopback address"),
        "{}",
        run.stderr
    );
}
