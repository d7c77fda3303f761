//! TLS and signals on the public port, and TLS out of it: `mpe-ledger serve` with a certificate
//! (HTTP/1.1 and h2 by ALPN, gRPC over TLS, no plaintext), certificate reload on SIGHUP without
//! dropping connections, SIGHUP on a plain port, a paid call in flight finishing after SIGTERM, the
//! chain and the upstream reached over `https://`, and start-up refusals of unusable TLS settings.
//!
//! Every certificate comes from a CA made when the test runs (tests/common/tls.rs); the chain is
//! ganache with the real MPE, the database a real Postgres, `serve` the real binary.

mod common;

use std::error::Error as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::TestDb;
use common::e2e::event_count;
use common::ganache::{Ganache, Mpe};
use common::gateway::{OK, RawClient, Reply, payment_metadata};
use common::ledger::{Ledger, LedgerSettings, LedgerTls, http_get};
use common::tls::{IssuedCert, TestCa, TlsConnection, TlsFront, grpc_channel, https_get, socket_of};
use common::upstream::{ECHO, SLOW, Upstream};
use mpe_ledger::chain::{ChainReader, EthChain};
use mpe_ledger::domain::signature::{channel_state_message, sign};
use mpe_ledger::domain::{Amount, ChannelId, Nonce};
use mpe_ledger::grpc::proto::ChannelStateRequest;
use mpe_ledger::grpc::proto::payment_channel_state_service_client::PaymentChannelStateServiceClient;
use mpe_ledger::tls::{ALPN_H2, ALPN_HTTP1};
use nix::sys::signal::Signal;
use tokio::task::JoinHandle;

const GROUP_ID: [u8; 32] = [7; 32];
const CLIENT: usize = 1;
const PROVIDER: usize = 2;
const CHANNEL_VALUE: u64 = 1000;
const PRICE: u64 = 10;
/// How long `serve` may take to act on a SIGHUP.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(10);
const RELOADED: &str = "TLS certificate reloaded";
const RELOAD_FAILED: &str = "TLS certificate reload failed";
/// Where the names of the port's certificate are.
const SERVER_NAMES: [&str; 2] = ["127.0.0.1", "localhost"];

/// A chain with the MPE, a database, an upstream service, a test CA.
struct World<'a> {
    ganache: &'a Ganache,
    mpe: Mpe<'a>,
    db: TestDb,
    upstream: Upstream,
    ca: TestCa,
}

impl<'a> World<'a> {
    async fn new(ganache: &'a Ganache) -> Self {
        Self {
            ganache,
            mpe: Mpe::deploy(ganache).await,
            db: TestDb::new().await,
            upstream: Upstream::start().await,
            ca: TestCa::new(),
        }
    }

    /// The port's certificate files at fixed paths (as an operator configures them), holding `cert`.
    fn server_files(&self, cert: &IssuedCert) -> LedgerTls {
        let dir = self.ca.scratch_dir("server");
        let tls = LedgerTls {
            cert_file: dir.join("cert.pem"),
            key_file: dir.join("key.pem"),
            ca_file: self.ca.ca_file(),
        };
        cert.install_at(&tls.cert_file, &tls.key_file);
        tls
    }

    async fn ledger(&self, tls: Option<LedgerTls>) -> Ledger {
        Ledger::start(&self.db.owner_url, &LedgerSettings { tls, ..self.settings() }).await
    }

    fn settings(&self) -> LedgerSettings {
        LedgerSettings {
            ethereum_rpc_url: self.ganache.url().to_owned(),
            mpe: self.mpe.address,
            group_id: GROUP_ID,
            payment_address: self.ganache.account(PROVIDER).address,
            price: PRICE,
            upstream: self.upstream.url.clone(),
            replica_id: "replica-tls".to_owned(),
            tls: None,
            ethereum_rpc_ca_file: None,
            upstream_ca_file: None,
        }
    }

    async fn open_channel(&self) -> ChannelId {
        let client = self.ganache.account(CLIENT);
        self.mpe.mint_and_deposit(client, 10_000).await;
        let expiration = self.ganache.block_number().await + 100_000;
        let provider = self.ganache.account(PROVIDER).address;
        self.mpe.open_channel(client, client.address, provider, GROUP_ID, CHANNEL_VALUE, expiration).await
    }

    /// A call of `method` paying one price at nonce 0 of `channel`, over h2c, in a task of its own.
    fn paid_call(&self, ledger: &Ledger, channel: ChannelId, method: &'static str) -> JoinHandle<Reply> {
        let metadata = payment_metadata(&self.mpe, self.ganache.account(CLIENT), channel, 0, PRICE);
        let address = SocketAddr::from(([127, 0, 0, 1], ledger.port));
        tokio::spawn(
            async move { RawClient::connect(address).await.call(method, &metadata, &[b"paid"]).await },
        )
    }

    /// `GetChannelState` signed by the client at the current block, as the clients send it.
    async fn state_request(&self, channel: ChannelId) -> ChannelStateRequest {
        let block = self.ganache.block_number().await;
        let message = channel_state_message(&self.mpe.eth_address(), channel, block);
        let bytes = channel.to_be_bytes();
        let first = bytes.iter().position(|&b| b != 0).unwrap_or(31);
        ChannelStateRequest {
            channel_id: bytes[first..].to_vec(),
            signature: sign(&message, &self.ganache.account(CLIENT).key.0).0.to_vec(),
            current_block: block,
        }
    }
}

/// Display of an error and of every error below it, as a log line would show the chain.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(next) = source {
        text.push_str(": ");
        text.push_str(&next.to_string());
        source = next.source();
    }
    text
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tls_port_serves_http1_and_h2_by_alpn_and_grpc_over_tls_and_refuses_plaintext() {
    let ganache = Ganache::start().await;
    let world = World::new(&ganache).await;
    let channel = world.open_channel().await;
    let cert = world.ca.issue(&SERVER_NAMES);
    let ledger = world.ledger(Some(world.server_files(&cert))).await;
    let ca = world.ca.ca_file();

    let (status, body, version) = https_get(ledger.port, "/healthz", &ca, ALPN_HTTP1).await.unwrap();
    assert_eq!((status, body.as_str(), version), (200, "ok\n", reqwest::Version::HTTP_11));
    let (status, body, version) = https_get(ledger.port, "/healthz", &ca, ALPN_H2).await.unwrap();
    assert_eq!((status, body.as_str(), version), (200, "ok\n", reqwest::Version::HTTP_2));

    let mut state = PaymentChannelStateServiceClient::new(grpc_channel(ledger.port, &ca).await);
    let reply = state
        .get_channel_state(world.state_request(channel).await)
        .await
        .expect("GetChannelState")
        .into_inner();
    assert_eq!(reply.current_nonce, Nonce::from(0).to_be_bytes().to_vec());
    assert!(reply.current_signed_amount.is_empty(), "{reply:?}");

    // HTTP/1.1 in clear text to the TLS port gets no HTTP answer at all.
    match http_get(ledger.port, "/healthz").await {
        Ok((status, body)) => assert_eq!(status, 0, "a plain request was answered: {body}"),
        Err(error) => println!("plain connection refused: {error}"),
    }
    assert_eq!(ledger.healthz().await, Some(200), "the port still serves TLS");
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_gives_new_connections_the_new_certificate_keeps_open_ones_and_survives_a_broken_key() {
    let ganache = Ganache::start().await;
    let world = World::new(&ganache).await;
    let (a, b) = (world.ca.issue(&SERVER_NAMES), world.ca.issue(&SERVER_NAMES));
    assert_ne!(a.der, b.der);
    let files = world.server_files(&a);
    let ledger = world.ledger(Some(files.clone())).await;
    let ca = world.ca.ca_file();

    let mut kept = TlsConnection::open(ledger.port, &ca).await.unwrap();
    assert_eq!(kept.peer_certificate, a.der, "serve starts with certificate A");
    assert_eq!(kept.get("/healthz").await.unwrap(), (200, "ok\n".to_owned()));

    // Renewal: B replaces A in the files, then SIGHUP.
    b.install_at(&files.cert_file, &files.key_file);
    ledger.signal(Signal::SIGHUP);
    assert!(ledger.wait_for_log(RELOADED, 1, RELOAD_TIMEOUT).await, "no reload logged:\n{}", ledger.log());
    let mut fresh = TlsConnection::open(ledger.port, &ca).await.unwrap();
    assert_eq!(fresh.peer_certificate, b.der, "a new connection gets certificate B");
    assert_eq!(fresh.get("/healthz").await.unwrap(), (200, "ok\n".to_owned()));
    assert_eq!(
        kept.get("/healthz").await.unwrap(),
        (200, "ok\n".to_owned()),
        "the connection opened under A still works"
    );

    // A key file without a key, then A's key beside B's certificate: both reloads fail, B stays.
    std::fs::write(&files.key_file, "not a key\n").unwrap();
    ledger.signal(Signal::SIGHUP);
    assert!(ledger.wait_for_log(RELOAD_FAILED, 1, RELOAD_TIMEOUT).await, "{}", ledger.log());
    std::fs::copy(&a.key_file, &files.key_file).unwrap();
    ledger.signal(Signal::SIGHUP);
    assert!(ledger.wait_for_log(RELOAD_FAILED, 2, RELOAD_TIMEOUT).await, "{}", ledger.log());
    let log = ledger.log();
    assert!(log.contains("holds no PEM private key"), "{log}");
    assert!(log.contains("is not usable with the certificate of tls_cert_file"), "{log}");
    assert_eq!(log.matches(RELOADED).count(), 1, "the failed reloads changed nothing");

    let mut after = TlsConnection::open(ledger.port, &ca).await.unwrap();
    assert_eq!(after.peer_certificate, b.der, "certificate B is kept");
    assert_eq!(after.get("/healthz").await.unwrap(), (200, "ok\n".to_owned()));
    assert_eq!(kept.get("/healthz").await.unwrap(), (200, "ok\n".to_owned()));
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_does_not_stop_a_plain_port() {
    let ganache = Ganache::start().await;
    let world = World::new(&ganache).await;
    let ledger = world.ledger(None).await;

    ledger.signal(Signal::SIGHUP);
    assert!(
        ledger.wait_for_log("SIGHUP: plain port, no certificate to reload", 1, RELOAD_TIMEOUT).await,
        "{}",
        ledger.log()
    );
    assert_eq!(ledger.healthz().await, Some(200), "serve is still healthy after SIGHUP");
    assert!(ledger.endpoint().starts_with("http://"));
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_a_paid_call_in_flight_finish_and_record_its_payment_before_serve_exits() {
    let ganache = Ganache::start().await;
    let world = World::new(&ganache).await;
    let channel = world.open_channel().await;
    let mut ledger = world.ledger(None).await;

    let call = world.paid_call(&ledger, channel, SLOW);
    let deadline = std::time::Instant::now() + RELOAD_TIMEOUT;
    while world.upstream.call_count() == 0 {
        assert!(std::time::Instant::now() < deadline, "the call never reached the upstream");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ledger.signal(Signal::SIGTERM);
    assert!(
        ledger.wait_for_log("no longer accepting connections", 1, RELOAD_TIMEOUT).await,
        "{}",
        ledger.log()
    );
    assert!(!call.is_finished(), "the shutdown began while the call was in flight");

    let reply = call.await.unwrap();
    assert_eq!((reply.status, reply.messages), (OK, vec![b"paid".to_vec()]), "{}", reply.message);
    assert!(ledger.stop(), "serve exits successfully:\n{}", ledger.log());
    assert!(ledger.log().contains("every connection finished"), "{}", ledger.log());
    assert_eq!(event_count(&world.db.pool, "payment_accepted", channel).await, 1, "the payment was recorded");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_paid_call_is_forwarded_to_an_https_upstream_trusting_upstream_ca_file() {
    let ganache = Ganache::start().await;
    let world = World::new(&ganache).await;
    let channel = world.open_channel().await;
    let front = TlsFront::start(world.upstream.address(), &world.ca, vec![ALPN_H2.to_vec()]).await;
    let settings = LedgerSettings {
        upstream: front.url(),
        upstream_ca_file: Some(world.ca.ca_file()),
        ..world.settings()
    };
    let ledger = Ledger::start(&world.db.owner_url, &settings).await;

    let reply = world.paid_call(&ledger, channel, ECHO).await.unwrap();
    assert_eq!((reply.status, reply.messages), (OK, vec![b"paid".to_vec()]), "{}", reply.message);
    assert_eq!(world.upstream.call_count(), 1);
    let user = world.ganache.account(CLIENT).address.to_checksum(None);
    assert_eq!(world.upstream.last_call().user_address(), Some(user));
    assert_eq!(event_count(&world.db.pool, "payment_accepted", channel).await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_chain_is_read_over_https_trusting_the_ca_file_and_an_unknown_issuer_is_refused_without_the_url()
{
    let ganache = Ganache::start().await;
    let world = World::new(&ganache).await;
    let channel = world.open_channel().await;
    let front = TlsFront::start(socket_of(ganache.url()), &world.ca, vec![ALPN_HTTP1.to_vec()]).await;
    // Hosted nodes carry their API key in the URL (in the path or the query; ganache serves only
    // `/`, so the query here); it must not appear in any error.
    let url = format!("{}/?key=test-api-key", front.url());
    let ca = world.ca.ca_file();

    let chain = EthChain::connect_with_ca(&url, Some(&ca), world.mpe.eth_address()).expect("an https client");
    let read = chain.channel(channel).await.expect("channels(id) over https").expect("the channel exists");
    assert_eq!(read.channel.value, Amount::from(CHANNEL_VALUE));
    assert_eq!(read.channel.sender, world.ganache.account(CLIENT).eth_address());
    assert_eq!(chain.current_block().await.unwrap(), ganache.block_number().await);

    let untrusting = EthChain::connect(&url, world.mpe.eth_address()).expect("an https client");
    let error = untrusting.channel(channel).await.expect_err("the test CA is not a system root");
    let text = error_chain(&error);
    println!("without the CA file: {text}");
    assert!(text.contains("UnknownIssuer"), "{text}");
    for secret in ["test-api-key", &front.port.to_string(), "127.0.0.1"] {
        assert!(!text.contains(secret), "{secret:?} in {text}");
    }
    assert!(error.source().is_some(), "the cause is kept");
}

// ------------------------------------------------------------------------------------------------
// Start-up refusals

/// `serve` with the given `MPE_LEDGER_*` settings and nothing else; its exit status and stderr.
fn serve_with(settings: &[(&str, PathBuf)]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_mpe-ledger"));
    command.args(["serve", "--listen", "127.0.0.1:0"]).arg("--data-dir").arg(dir.path().join("ledger"));
    for (key, _) in std::env::vars().filter(|(key, _)| key.starts_with("MPE_LEDGER_")) {
        command.env_remove(key);
    }
    command.env_remove("DATABASE_URL").env("RUST_LOG", "off");
    for (key, value) in settings {
        command.env(format!("MPE_LEDGER_{key}"), value);
    }
    let output = command.output().unwrap();
    (output.status.success(), String::from_utf8_lossy(&output.stderr).trim().to_owned())
}

#[track_caller]
fn assert_one_line_naming(stopped: (bool, String), setting: &str, also: &str) {
    let (success, stderr) = stopped;
    assert!(!success, "serve started: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains(&format!("invalid setting {setting}")), "{stderr}");
    assert!(stderr.contains(also), "{also:?} not in {stderr}");
}

#[test]
fn a_missing_certificate_file_stops_start_up_naming_tls_cert_file_and_the_file() {
    let ca = TestCa::new();
    let cert = ca.issue(&SERVER_NAMES);
    let missing = ca.scratch_dir("nothing").join("cert.pem");
    let stopped = serve_with(&[("TLS_CERT_FILE", missing.clone()), ("TLS_KEY_FILE", cert.key_file)]);
    assert_one_line_naming(stopped, "tls_cert_file", &missing.display().to_string());
}

#[test]
fn a_key_that_does_not_match_the_certificate_stops_start_up_naming_tls_key_file() {
    let ca = TestCa::new();
    let (a, b) = (ca.issue(&SERVER_NAMES), ca.issue(&SERVER_NAMES));
    let stopped = serve_with(&[("TLS_CERT_FILE", a.cert_file), ("TLS_KEY_FILE", b.key_file.clone())]);
    assert_one_line_naming(stopped, "tls_key_file", &b.key_file.display().to_string());
}

#[test]
fn one_tls_file_without_the_other_stops_start_up_naming_the_missing_one() {
    let ca = TestCa::new();
    let cert = ca.issue(&SERVER_NAMES);
    let only_cert = serve_with(&[("TLS_CERT_FILE", cert.cert_file)]);
    assert_one_line_naming(only_cert, "tls_key_file", "missing");
    let only_key = serve_with(&[("TLS_KEY_FILE", cert.key_file)]);
    assert_one_line_naming(only_key, "tls_cert_file", "missing");
}
