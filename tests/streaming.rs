//! The production wire of paid calls, in the gateway: replies streamed as the service sends them,
//! bidirectional calls, memory bounded by what is in flight, deadlines and the concurrency limit.
//! Harness: `common::gateway` (the gateway in the test process, a raw HTTP/2 client) and, for the
//! memory bound, `common::ledger::Ledger` (`mpe-ledger serve` as a child process, whose peak RSS is
//! read from /proc).

mod common;

use std::convert::Infallible;
use std::time::{Duration, Instant};

use common::TestDb;
use common::ganache::{Ganache, Mpe};
use common::gateway::*;
use common::ledger::{Ledger, LedgerSettings};
use common::upstream::{self, BIG_MESSAGE_BYTES, Upstream, frame_message};
use hyper::body::Frame;
use mpe_ledger::grpc::paid_call::parse_grpc_timeout;

/// How long a test waits for something that should come at once.
const PROMPTLY: Duration = Duration::from_secs(10);

async fn promptly<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(PROMPTLY, future).await.unwrap_or_else(|_| panic!("{what} did not come in time"))
}

fn send(frames: &RequestFrames, message: &[u8]) {
    frames.unbounded_send(Ok::<_, Infallible>(Frame::data(frame_message(message)))).unwrap();
}

#[tokio::test]
async fn a_bidirectional_echo_exchanges_messages_one_at_a_time() {
    let ganache = Ganache::start().await;
    let world = World::new(&ganache).await;
    let (frames, mut reply) =
        world.client.open_streaming(upstream::BIDI, &world.metadata(0, PRICE), &[0; 3]).await;
    for round in 0..5u8 {
        let message = vec![round; 3];
        if round > 0 {
            send(&frames, &message);
        }
        // The next message is sent only once this one came back: a ping-pong.
        assert_eq!(promptly("the echo", reply.next()).await, Next::Message(message));
    }
    drop(frames);
    assert_eq!(promptly("the status", reply.next()).await, Next::Status(OK, String::new()));
    assert_eq!(world.accepted_amounts().await, amounts(&[PRICE]));
}

#[tokio::test]
async fn a_hung_service_is_cut_at_the_deadline_and_its_channel_takes_the_next_payment_at_once() {
    let ganache = Ganache::start().await;
    let max_call = Duration::from_secs(2);
    let world =
        World::build(&ganache, WorldOptions { max_call_duration: max_call, ..WorldOptions::default() }).await;
    let before = world.snapshot().await;
    let started = Instant::now();
    let reply = world.call(upstream::HANG, &world.metadata(0, PRICE)).await;
    let took = started.elapsed();
    assert_eq!(
        (reply.status, reply.message.as_str()),
        (DEADLINE_EXCEEDED, "deadline exceeded: the call ran past the ledger's longest call duration (2 s)")
    );
    assert!(took >= max_call && took < max_call + Duration::from_secs(3), "cut after {took:?}");
    assert_eq!(world.snapshot().await, before, "nothing recorded for the cut call");
    assert_eq!(world.leases_held().await, 0, "the lease was released at once");
    // The upstream stream was reset, so the service stops working for nobody.
    promptly("the reset", async {
        while world.upstream.hangs_reset() == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    // Well before any lease expiry, the same payment goes through.
    world.pay_successfully(0, PRICE).await;
    assert_eq!(world.accepted_amounts().await, amounts(&[PRICE]));
    assert_eq!(world.metrics.paid_call_limits.with_label_values(&["deadline"]).get(), 1);
}

#[tokio::test]
async fn the_clients_grpc_timeout_is_enforced_and_the_time_left_is_forwarded() {
    let ganache = Ganache::start().await;
    let world = World::new(&ganache).await;
    let mut metadata = world.metadata(0, PRICE);
    metadata.push(("grpc-timeout".to_owned(), "800m".to_owned()));
    let before = world.snapshot().await;
    let reply = world.call(upstream::HANG, &metadata).await;
    assert_eq!(
        (reply.status, reply.message.as_str()),
        (DEADLINE_EXCEEDED, "deadline exceeded: the call ran past the client's grpc-timeout")
    );
    assert_eq!(world.snapshot().await, before);
    let forwarded = world.upstream.last_call().headers["grpc-timeout"].to_str().unwrap().to_owned();
    let left = parse_grpc_timeout(forwarded.as_bytes()).expect("a well-formed grpc-timeout upstream");
    assert!(left <= Duration::from_millis(800) && left > Duration::ZERO, "forwarded {forwarded}");

    // A call well within its timeout is served and recorded.
    let mut metadata = world.metadata(0, PRICE);
    metadata.push(("grpc-timeout".to_owned(), "30S".to_owned()));
    let reply = world.call(upstream::ECHO, &metadata).await;
    assert_eq!((reply.status, reply.message.as_str()), (OK, ""));
    assert_eq!(world.accepted_amounts().await, amounts(&[PRICE]));
}

#[tokio::test]
async fn a_malformed_grpc_timeout_is_refused_before_anything_is_forwarded() {
    let ganache = Ganache::start().await;
    let world = World::new(&ganache).await;
    let before = world.snapshot().await;
    let mut metadata = world.metadata(0, PRICE);
    metadata.push(("grpc-timeout".to_owned(), "soon".to_owned()));
    let reply = world.call(upstream::ECHO, &metadata).await;
    assert_eq!((reply.status, reply.message.as_str()), (INVALID_ARGUMENT, "malformed grpc-timeout \"soon\""));
    assert_eq!(world.upstream.call_count(), 0);
    assert_eq!(world.snapshot().await, before);
    assert_eq!(world.leases_held().await, 0);
}

#[tokio::test]
async fn the_first_streamed_message_reaches_the_client_before_the_service_sends_its_last() {
    let ganache = Ganache::start().await;
    let world = World::new(&ganache).await;
    let (frames, mut reply) =
        world.client.open_streaming(upstream::GATED, &world.metadata(0, PRICE), b"first").await;
    // The service holds its last message until the gate opens: the first one is already here.
    assert_eq!(promptly("the first message", reply.next()).await, Next::Message(b"first".to_vec()));
    assert_eq!(world.accepted_amounts().await, amounts(&[]), "nothing is recorded before the status");
    assert_eq!(world.leases_held().await, 1, "the channel is held while the call runs");
    world.upstream.open_gate();
    assert_eq!(promptly("the last message", reply.next()).await, Next::Message(vec![2]));
    drop(frames);
    assert_eq!(promptly("the status", reply.next()).await, Next::Status(OK, String::new()));
    assert_eq!(world.accepted_amounts().await, amounts(&[PRICE]));
    assert_eq!(world.leases_held().await, 0);
}

#[tokio::test]
async fn beyond_the_concurrency_limit_a_call_is_refused_at_once_and_the_ledger_keeps_serving() {
    let ganache = Ganache::start().await;
    let options = WorldOptions { max_concurrent_calls: 2, channels: 3, ..WorldOptions::default() };
    let world = World::build(&ganache, options).await;
    let sender = world.sender();
    // Two calls on two channels hold both places, waiting at the gate.
    let mut running = Vec::new();
    for &channel in &world.channels[..2] {
        let metadata = world.metadata_for(sender, channel, 0, PRICE);
        let (frames, mut reply) = world.client.open_streaming(upstream::GATED, &metadata, b"held").await;
        assert_eq!(promptly("the first message", reply.next()).await, Next::Message(b"held".to_vec()));
        running.push((frames, reply));
    }
    let before = world.snapshot().await;
    let third = world.metadata_for(sender, world.channels[2], 0, PRICE);
    let started = Instant::now();
    let refused = world.call(upstream::ECHO, &third).await;
    assert_eq!(
        (refused.status, refused.message.as_str()),
        (RESOURCE_EXHAUSTED, "too many paid calls in flight (at most 2): try again later")
    );
    assert!(started.elapsed() < PROMPTLY, "refused at once, not queued");
    assert_eq!(world.snapshot().await, before, "a refused call writes nothing");
    assert_eq!(world.metrics.paid_call_limits.with_label_values(&["concurrency"]).get(), 1);

    // The running calls end well, and a place is free again.
    world.upstream.open_gate();
    for (frames, mut reply) in running {
        drop(frames);
        let (messages, _, status, message) = promptly("the held call's end", reply.drain()).await;
        assert_eq!((messages, status, message.as_str()), (1, OK, ""));
    }
    let served = world.call(upstream::ECHO, &third).await;
    assert_eq!((served.status, served.message.as_str()), (OK, ""));
    for &channel in &world.channels {
        assert_eq!(world.accepted_amounts_of(channel).await, amounts(&[PRICE]));
    }
}

#[tokio::test]
async fn a_client_that_leaves_mid_stream_leaves_no_lease_and_no_payment_behind() {
    let ganache = Ganache::start().await;
    let world = World::new(&ganache).await;
    let before = world.snapshot().await;
    let (frames, mut reply) =
        world.client.open_streaming(upstream::GATED, &world.metadata(0, PRICE), b"first").await;
    assert_eq!(promptly("the first message", reply.next()).await, Next::Message(b"first".to_vec()));
    assert_eq!(world.leases_held().await, 1);
    // The client goes: its request and its reply are dropped, which resets the stream.
    drop(frames);
    drop(reply);
    promptly("the lease's release", async {
        while world.leases_held().await != 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    world.upstream.open_gate();
    assert_eq!(world.snapshot().await, before, "a call the client left is not recorded");
    // The channel takes the same payment at once.
    world.pay_successfully(0, PRICE).await;
    assert_eq!(world.accepted_amounts().await, amounts(&[PRICE]));
}

/// The size of the big reply, in [`BIG_MESSAGE_BYTES`] messages (200 MiB).
const BIG_REPLY_MESSAGES: usize = 200;
/// The bound on `serve`'s peak resident memory while it passes the big reply: the debug build's
/// own footprint (about 20 MiB) plus room for what is in flight, far below the reply's 200 MiB.
const SERVE_RSS_BOUND_MIB: f64 = 64.0;

#[tokio::test(flavor = "multi_thread")]
async fn a_200_mib_server_streamed_reply_passes_while_serves_memory_stays_under_its_bound() {
    let ganache = Ganache::start().await;
    let mpe = Mpe::deploy(&ganache).await;
    let (client, provider) = (ganache.account(1), ganache.account(2));
    mpe.mint_and_deposit(client, 10_000).await;
    let expiration = ganache.block_number().await + 1000;
    let channel = mpe.open_channel(client, client.address, provider.address, GROUP, 1000, expiration).await;
    let db = TestDb::new().await;
    let service = Upstream::start().await;
    let settings = LedgerSettings {
        ethereum_rpc_url: ganache.url().to_owned(),
        mpe: mpe.address,
        group_id: GROUP,
        payment_address: provider.address,
        price: PRICE,
        upstream: service.url.clone(),
        replica_id: "replica-big".to_owned(),
        tls: None,
        ethereum_rpc_ca_file: None,
        upstream_ca_file: None,
    };
    let ledger = Ledger::start(&db.owner_url, &settings).await;
    let at_start = ledger.peak_rss_mib().expect("serve's memory");
    let raw = RawClient::connect(([127, 0, 0, 1], ledger.port).into()).await;
    let metadata = payment_metadata(&mpe, client, channel, 0, PRICE);
    let count = BIG_REPLY_MESSAGES.to_string();
    let (frames, mut reply) = raw.open_streaming(upstream::BIG, &metadata, count.as_bytes()).await;
    drop(frames);
    let (messages, bytes, status, message) = reply.drain().await;
    assert_eq!((messages, status, message.as_str()), (BIG_REPLY_MESSAGES, OK, ""));
    assert_eq!(bytes, (BIG_REPLY_MESSAGES * BIG_MESSAGE_BYTES) as u64);
    let peak = ledger.peak_rss_mib().expect("serve's memory");
    println!("serve's peak RSS: {at_start:.1} MiB at start, {peak:.1} MiB after the 200 MiB reply");
    assert!(peak < SERVE_RSS_BOUND_MIB, "serve's peak RSS was {peak:.1} MiB");
    assert_eq!(common::e2e::accepted_increments(&db.pool).await, u128::from(PRICE), "the call was recorded");
}
