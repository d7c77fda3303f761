//! Paid calls end to end: a raw HTTP/2 gRPC client (so that the seed's raw status 1000 is visible)
//! calls the ledger's gateway, served as the axum fallback, on a real chain (ganache running the real
//! MultiPartyEscrow) and a real Postgres; the gateway forwards to the example upstream service of
//! `common::upstream` (harness: `common::gateway`). Every refusal asserts the code, the message, that
//! the service was not called, and that neither the event log nor any projection changed. Streaming,
//! deadlines and limits are in `tests/streaming.rs`.

mod common;

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use common::ganache::Ganache;
use common::gateway::*;
use common::upstream;
use mpe_ledger::chain::EthChain;
use mpe_ledger::domain::ChannelId;
use mpe_ledger::grpc::paid_call::PaidCallGateway;

#[tokio::test]
async fn a_paid_unary_call_is_forwarded_with_the_sender_and_committed_once() {
    let ganache = Ganache::start().await;
    let world = World::new(&ganache).await;
    let reply = world.call(upstream::ECHO, &world.metadata(0, PRICE)).await;
    assert_eq!((reply.status, reply.message.as_str()), (OK, ""));
    assert_eq!(reply.messages, vec![b"hello".to_vec()], "the service's reply reaches the client");

    assert_eq!(world.upstream.call_count(), 1);
    let call = world.upstream.last_call();
    assert_eq!(call.path, upstream::ECHO);
    assert_eq!(call.user_address(), Some(world.sender().eth_address().to_string()), "checksummed sender");
    let payment_headers: Vec<&str> =
        call.headers.keys().map(|k| k.as_str()).filter(|k| k.starts_with("snet-payment-")).collect();
    assert!(payment_headers.is_empty(), "payment metadata is not forwarded: {payment_headers:?}");
    assert_eq!(world.accepted_amounts().await, amounts(&[PRICE]));
}

#[tokio::test]
async fn three_calls_raising_the_amount_by_the_price_are_all_committed() {
    let ganache = Ganache::start().await;
    let world = World::new(&ganache).await;
    for amount in [PRICE, 2 * PRICE, 3 * PRICE] {
        world.pay_successfully(0, amount).await;
    }
    assert_eq!(world.upstream.call_count(), 3);
    assert_eq!(world.accepted_amounts().await, amounts(&[PRICE, 2 * PRICE, 3 * PRICE]));
}

#[tokio::test]
async fn binary_metadata_is_accepted_without_base64_padding() {
    let ganache = Ganache::start().await;
    let world = World::new(&ganache).await;
    let signature = world.mpe.sign_payment(world.sender(), world.channel, 0, PRICE);
    let unpadded = STANDARD_NO_PAD.encode(signature.0);
    assert!(!unpadded.ends_with('='));
    let metadata = with(&world.metadata(0, PRICE), "snet-payment-channel-signature-bin", &unpadded);
    let reply = world.call(upstream::ECHO, &metadata).await;
    assert_eq!((reply.status, reply.message.as_str()), (OK, ""));
    assert_eq!(world.accepted_amounts().await, amounts(&[PRICE]));
}

#[tokio::test]
async fn a_failing_upstream_call_passes_its_status_records_nothing_and_releases_the_lease() {
    let ganache = Ganache::start().await;
    let world = World::new(&ganache).await;
    let before = world.snapshot().await;
    let reply = world.call(upstream::FAIL, &world.metadata(0, PRICE)).await;
    assert_eq!((reply.status, reply.message.as_str()), (upstream::FAILURE_STATUS, upstream::FAILURE_MESSAGE));
    assert_eq!(world.upstream.call_count(), 1);
    assert_eq!(world.snapshot().await, before, "a failed call records nothing");
    // The lease was released and the same payment is still good.
    world.pay_successfully(0, PRICE).await;
    assert_eq!(world.accepted_amounts().await, amounts(&[PRICE]));
}

#[tokio::test]
async fn a_stale_nonce_is_refused_with_raw_status_1000_and_not_forwarded() {
    let ganache = Ganache::start().await;
    let world = World::new(&ganache).await;
    world.pay_successfully(0, PRICE).await;
    let before = world.snapshot().await;
    let reply = world.call(upstream::ECHO, &world.metadata(1, 2 * PRICE)).await;
    assert_eq!(
        (reply.status, reply.message.as_str()),
        (INCORRECT_NONCE, "incorrect payment channel nonce, latest: 0, sent: 1")
    );
    assert_eq!(world.upstream.call_count(), 1, "not forwarded");
    assert_eq!(world.snapshot().await, before);
}

#[tokio::test]
async fn a_replayed_payment_is_refused_as_zero_income_and_not_forwarded() {
    let ganache = Ganache::start().await;
    let world = World::new(&ganache).await;
    let metadata = world.metadata(0, PRICE);
    assert_eq!(world.call(upstream::ECHO, &metadata).await.status, OK);
    let before = world.snapshot().await;
    let reply = world.call(upstream::ECHO, &metadata).await;
    assert_eq!(
        (reply.status, reply.message.as_str()),
        (UNAUTHENTICATED, format!("income 0 does not equal to price {PRICE}").as_str())
    );
    assert_eq!(world.upstream.call_count(), 1, "not forwarded");
    assert_eq!(world.snapshot().await, before);
    assert_eq!(world.accepted_amounts().await, amounts(&[PRICE]));
}

#[tokio::test]
async fn every_bad_request_is_refused_before_forwarding_and_changes_nothing() {
    let ganache = Ganache::start().await;
    let world = World::new(&ganache).await;
    world.pay_successfully(0, PRICE).await;
    let good = world.metadata(0, 2 * PRICE);
    let id = world.channel.to_string();
    let unknown_channel = ChannelId::from(999);
    let oversized = vec![1u8; MAX_MESSAGE_BYTES + 1];

    struct Case {
        name: &'static str,
        path: &'static str,
        metadata: Metadata,
        message: Vec<u8>,
        content_type: &'static str,
        status: u32,
        error: String,
    }
    let case = |name, metadata: Metadata, status, error: &str| Case {
        name,
        path: upstream::ECHO,
        metadata,
        message: b"hello".to_vec(),
        content_type: "application/grpc",
        status,
        error: error.to_owned(),
    };
    let mut twice = good.clone();
    twice.push(("snet-payment-channel-id".to_owned(), id.clone()));
    let cases = vec![
        case(
            "missing header",
            without(&good, "snet-payment-channel-nonce"),
            INVALID_ARGUMENT,
            "missing \"snet-payment-channel-nonce\"",
        ),
        case(
            "header twice",
            twice,
            INVALID_ARGUMENT,
            &format!("too many values for key \"snet-payment-channel-id\": [{id} {id}]"),
        ),
        case(
            "non-decimal number",
            with(&good, "snet-payment-channel-amount", "0x14"),
            INVALID_ARGUMENT,
            "incorrect format \"snet-payment-channel-amount\": \"0x14\"",
        ),
        case(
            "signature not base64",
            with(&good, "snet-payment-channel-signature-bin", "***"),
            INVALID_ARGUMENT,
            "incorrect format \"snet-payment-channel-signature-bin\": \"***\"",
        ),
        case(
            "signature of the wrong length",
            with(&good, "snet-payment-channel-signature-bin", &STANDARD.encode([1, 2, 3])),
            UNAUTHENTICATED,
            "payment signature is not valid",
        ),
        case(
            "wrong signer",
            world.metadata_for(ganache.account(3), world.channel, 0, 2 * PRICE),
            UNAUTHENTICATED,
            "payment is not signed by channel signer/sender",
        ),
        case(
            "amount raised by more than the price",
            world.metadata(0, 2 * PRICE + 1),
            UNAUTHENTICATED,
            &format!("income {} does not equal to price {PRICE}", PRICE + 1),
        ),
        case(
            "amount not raised",
            world.metadata(0, PRICE),
            UNAUTHENTICATED,
            &format!("income 0 does not equal to price {PRICE}"),
        ),
        case(
            "unknown channel",
            world.metadata_for(world.sender(), unknown_channel, 0, PRICE),
            UNAUTHENTICATED,
            "payment channel \"{ID: 999}\" not found",
        ),
        case(
            "unknown payment type",
            with(&good, "snet-payment-type", "bitcoin"),
            INVALID_ARGUMENT,
            "unexpected \"snet-payment-type\", value: \"bitcoin\"",
        ),
        case(
            "free call",
            with(&good, "snet-payment-type", "free-call"),
            UNIMPLEMENTED,
            "payment type \"free-call\" is not supported by this ledger: pay with \"escrow\"",
        ),
        case(
            "prepaid call",
            with(&good, "snet-payment-type", "prepaid-call"),
            UNIMPLEMENTED,
            "payment type \"prepaid-call\" is not supported by this ledger: pay with \"escrow\"",
        ),
        Case {
            message: oversized,
            ..case(
                "oversized message",
                good.clone(),
                RESOURCE_EXHAUSTED,
                &format!(
                    "received message larger than max ({} vs. {MAX_MESSAGE_BYTES})",
                    MAX_MESSAGE_BYTES + 1
                ),
            )
        },
        Case {
            path: "/escrow.TokenService/GetToken",
            ..case(
                "token service",
                good.clone(),
                UNIMPLEMENTED,
                "method /escrow.TokenService/GetToken belongs to the daemon's own services and is not \
                 implemented by this ledger",
            )
        },
        Case {
            path: "/training.Daemon/create_model",
            ..case(
                "training service",
                good.clone(),
                UNIMPLEMENTED,
                "method /training.Daemon/create_model belongs to the daemon's own services and is not \
                 implemented by this ledger",
            )
        },
        Case {
            path: "/no-method",
            ..case("malformed method", good.clone(), UNIMPLEMENTED, "malformed method name: \"/no-method\"")
        },
        Case {
            content_type: "application/json",
            ..case(
                "not gRPC",
                good.clone(),
                INVALID_ARGUMENT,
                "content-type \"application/json\" is not application/grpc",
            )
        },
    ];

    let before = world.snapshot().await;
    for case in cases {
        let reply = world
            .client
            .call_with_content_type(case.path, &case.metadata, &[&case.message], case.content_type)
            .await;
        assert_eq!(
            (reply.status, reply.message.as_str()),
            (case.status, case.error.as_str()),
            "{}",
            case.name
        );
        assert!(reply.messages.is_empty(), "{}", case.name);
        assert_eq!(world.upstream.call_count(), 1, "{}: not forwarded", case.name);
        assert_eq!(world.snapshot().await, before, "{}: nothing recorded", case.name);
    }
    // Still serving, and no refusal kept the channel's lease.
    world.pay_successfully(0, 2 * PRICE).await;
    assert_eq!(world.upstream.call_count(), 2);
    assert_eq!(world.accepted_amounts().await, amounts(&[PRICE, 2 * PRICE]));
}

#[tokio::test]
async fn a_server_streaming_call_delivers_all_its_messages_and_commits_once() {
    let ganache = Ganache::start().await;
    let world = World::new(&ganache).await;
    let reply = world.call(upstream::STREAM, &world.metadata(0, PRICE)).await;
    assert_eq!((reply.status, reply.message.as_str()), (OK, ""));
    let expected: Vec<Vec<u8>> =
        (1..=upstream::STREAMED_MESSAGES as u8).map(|i| [&b"hello"[..], &[i]].concat()).collect();
    assert_eq!(reply.messages, expected);
    assert_eq!(world.accepted_amounts().await, amounts(&[PRICE]));
}

#[tokio::test]
async fn a_client_streaming_call_forwards_every_message_and_commits_once() {
    let ganache = Ganache::start().await;
    let world = World::new(&ganache).await;
    let reply = world.client.call(upstream::ECHO, &world.metadata(0, PRICE), &[b"one", b"", b"three"]).await;
    assert_eq!((reply.status, reply.message.as_str()), (OK, ""));
    assert_eq!(reply.messages, vec![b"one".to_vec(), vec![], b"three".to_vec()]);
    assert_eq!(world.accepted_amounts().await, amounts(&[PRICE]));
}

#[tokio::test]
async fn an_oversized_later_message_of_a_stream_breaks_the_forwarded_call_and_records_nothing() {
    let ganache = Ganache::start().await;
    let world = World::new(&ganache).await;
    let before = world.snapshot().await;
    let oversized = vec![1u8; MAX_MESSAGE_BYTES + 1];
    let messages = vec![b"first".to_vec(), oversized];
    let reply = world
        .client
        .call_paced(upstream::ECHO, &world.metadata(0, PRICE), messages, Duration::from_millis(300))
        .await;
    assert_eq!(
        (reply.status, reply.message.as_str()),
        (
            RESOURCE_EXHAUSTED,
            format!("received message larger than max ({} vs. {MAX_MESSAGE_BYTES})", MAX_MESSAGE_BYTES + 1)
                .as_str()
        )
    );
    assert_eq!(world.upstream.call_count(), 1, "the call had started with its first message");
    assert_eq!(world.snapshot().await, before);
    world.pay_successfully(0, PRICE).await;
    assert_eq!(world.accepted_amounts().await, amounts(&[PRICE]));
}

#[tokio::test]
async fn a_paced_client_stream_is_forwarded_whole() {
    let ganache = Ganache::start().await;
    let world = World::new(&ganache).await;
    let messages = vec![b"one".to_vec(), b"two".to_vec(), b"three".to_vec()];
    let reply = world
        .client
        .call_paced(upstream::ECHO, &world.metadata(0, PRICE), messages.clone(), Duration::from_millis(100))
        .await;
    assert_eq!((reply.status, reply.message.as_str()), (OK, ""));
    assert_eq!(reply.messages, messages);
    assert_eq!(world.accepted_amounts().await, amounts(&[PRICE]));
}

#[tokio::test]
async fn an_unreachable_upstream_is_unavailable_and_the_payment_is_rolled_back() {
    let ganache = Ganache::start().await;
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let world =
        World::build(&ganache, WorldOptions { upstream_url: Some(closed), ..WorldOptions::default() }).await;
    let before = world.snapshot().await;
    for _ in 0..2 {
        // The second attempt is not "in progress": the first one released the lease.
        let reply = world.call(upstream::ECHO, &world.metadata(0, PRICE)).await;
        assert_eq!((reply.status, reply.message.as_str()), (UNAVAILABLE, "the service is unavailable"));
        assert_eq!(world.snapshot().await, before);
    }
}

#[tokio::test]
async fn a_chain_that_cannot_be_read_is_internal_with_a_fixed_message_that_names_no_url() {
    let ganache = Ganache::start().await;
    // A hosted endpoint's URL carries its API key; this one is on a closed port.
    let rpc_url = "http://127.0.0.1:9/v3/secret-api-key".to_owned();
    let world =
        World::build(&ganache, WorldOptions { rpc_url: Some(rpc_url), ..WorldOptions::default() }).await;
    let before = world.snapshot().await;
    let reply = world.call(upstream::ECHO, &world.metadata(0, PRICE)).await;
    let expected = format!("payment channel error: {}", mpe_ledger::escrow::CHAIN_FAILURE);
    assert_eq!((reply.status, reply.message.as_str()), (INTERNAL, expected.as_str()));
    assert_eq!(world.upstream.call_count(), 0);
    assert_eq!(world.snapshot().await, before);
    assert_eq!(world.leases_held().await, 0);
}

#[tokio::test]
async fn a_long_call_keeps_its_lease_renewed_past_the_lease_lifetime() {
    let ganache = Ganache::start().await;
    let lease_ttl = Duration::from_secs(1);
    assert!(upstream::SLOW_CALL > 2 * lease_ttl);
    let world = World::build(&ganache, WorldOptions { lease_ttl, ..WorldOptions::default() }).await;
    let metadata = world.metadata(0, PRICE);
    let client = world.client.clone();
    let slow = tokio::spawn(async move { client.call(upstream::SLOW, &metadata, &[b"hello"]).await });
    tokio::time::sleep(lease_ttl + lease_ttl / 2).await;
    // Past the lease's lifetime, the channel is still held by the call in flight.
    let reply = world.call(upstream::ECHO, &world.metadata(0, PRICE)).await;
    assert_eq!(
        (reply.status, reply.message.as_str()),
        (
            FAILED_PRECONDITION,
            format!("another transaction on channel: {{ID: {}}} is in progress", world.channel).as_str()
        )
    );
    let reply = slow.await.unwrap();
    assert_eq!((reply.status, reply.message.as_str()), (OK, ""));
    assert_eq!(world.accepted_amounts().await, amounts(&[PRICE]));
    // Renewal stopped with the call, and the commit released the lease.
    assert_eq!(world.payments.leases_held(), 0, "the call's lease is no longer kept renewed");
    world.pay_successfully(0, 2 * PRICE).await;
}

#[tokio::test]
async fn a_call_abandoned_by_its_client_gives_the_lease_back_at_once() {
    let ganache = Ganache::start().await;
    let world = World::new(&ganache).await;
    assert!(LEASE_TTL > 10 * upstream::SLOW_CALL, "only an explicit release can free the channel in time");
    let before = world.snapshot().await;
    let impatient = RawClient::connect(world.served.address).await;
    let metadata = world.metadata(0, PRICE);
    let call = tokio::spawn(async move { impatient.call(upstream::SLOW, &metadata, &[b"hello"]).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(world.upstream.call_count(), 1, "the slow call is in flight");
    call.abort();
    let _ = call.await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(world.snapshot().await, before, "nothing recorded for the abandoned call");
    assert_eq!(world.payments.leases_held(), 0, "the abandoned call's lease is no longer kept renewed");
    // Well before the lease's expiry, the same payment goes through.
    world.pay_successfully(0, PRICE).await;
    assert_eq!(world.accepted_amounts().await, amounts(&[PRICE]));
}

#[tokio::test]
async fn without_a_chain_paid_calls_are_refused_and_the_daemon_services_stay_unimplemented() {
    let served = serve(PaidCallGateway::<EthChain>::without_chain()).await;
    let client = RawClient::connect(served.address).await;
    let metadata: Metadata = vec![("snet-payment-type".to_owned(), "escrow".to_owned())];
    let reply = client.call(upstream::ECHO, &metadata, &[b"hello"]).await;
    assert_eq!(
        (reply.status, reply.message.as_str()),
        (
            FAILED_PRECONDITION,
            "paid calls are refused: no chain is configured (set ethereum_rpc_url, mpe_address, group_id, \
             payment_address, price and upstream)"
        )
    );
    let reply = client.call("/escrow.PaymentChannelStateService/GetChannelState", &metadata, &[b""]).await;
    assert_eq!(reply.status, UNIMPLEMENTED);
}
