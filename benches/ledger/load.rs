//! The HTTP/2 load generator: each client is its own h2c connection (prior knowledge) looping unary
//! gRPC calls, paid ones carrying the metadata exactly as the SingularityNET clients send it.
//!
//! A call succeeds when the reply's `grpc-status` (from the trailers, or from the headers of a
//! trailers-only reply) is 0. A paid client sends the payments signed for it before the phase
//! ([`Presigned`]), moves on only after an accepted one, and re-reads its channel after an error.

use std::time::{Duration, Instant};

use base64::Engine;
use http::{HeaderMap, Request};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use sqlx::PgPool;
use tokio::net::TcpStream;

use crate::common::upstream::{ECHO, frame_message};
use crate::stats::{Record, Summary};
use crate::wallet::Presigned;

/// The request message of every call: tiny, as the no-op upstream echoes it back.
const MESSAGE: &[u8] = b"mpe-ledger bench";

/// How long a phase runs.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub warmup: Duration,
    pub window: Duration,
}

/// Runs `clients` connections against `127.0.0.1:port`. With `payments`, client `i` pays with
/// `payments[i]` (and `pool` is the ledger's database, to resync after errors); the used payments
/// come back for the wallet.
pub async fn run(
    port: u16,
    clients: usize,
    timing: Timing,
    payments: Option<(Vec<Presigned>, PgPool)>,
) -> (Summary, Vec<Presigned>) {
    let start = Instant::now();
    let window_start = start + timing.warmup;
    let end = window_start + timing.window;
    let mut tasks = tokio::task::JoinSet::new();
    match payments {
        Some((presigned, pool)) => {
            assert_eq!(presigned.len(), clients, "one channel per client");
            for payment in presigned {
                let pool = pool.clone();
                tasks.spawn(client(port, Some((payment, pool)), window_start, end));
            }
        }
        None => {
            for _ in 0..clients {
                tasks.spawn(client(port, None, window_start, end));
            }
        }
    }
    let mut record = Record::default();
    let mut used = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let (client_record, presigned) = joined.expect("a client task does not panic");
        record.merge(client_record);
        used.extend(presigned);
    }
    (record.summary(timing.window), used)
}

async fn client(
    port: u16,
    mut paying: Option<(Presigned, PgPool)>,
    window_start: Instant,
    end: Instant,
) -> (Record, Option<Presigned>) {
    let mut record = Record::default();
    let uri = format!("http://127.0.0.1:{port}{ECHO}");
    let mut sender = None;
    while Instant::now() < end {
        let started = Instant::now();
        if sender.is_none() {
            match connect(port).await {
                Ok(connected) => sender = Some(connected),
                Err(kind) => {
                    record.error(started, kind, window_start);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            }
        }
        let mut request = Request::post(&uri)
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(Full::new(frame_message(MESSAGE)))
            .expect("a valid request");
        if let Some((presigned, _)) = &paying {
            let Some((amount, signature)) = presigned.current() else {
                record.exhausted += 1;
                break;
            };
            payment_headers(request.headers_mut(), presigned, amount, signature.as_bytes());
        }
        let started = Instant::now();
        let outcome = call(sender.as_mut().expect("connected above"), request).await;
        let latency = started.elapsed();
        match outcome {
            Ok(status) if status == "0" => {
                record.ok(started, latency, window_start);
                if let Some((presigned, _)) = &mut paying {
                    presigned.advance();
                }
            }
            Ok(status) => {
                record.error(started, status, window_start);
                if let Some((presigned, pool)) = &mut paying {
                    presigned.resync(pool).await;
                }
            }
            Err(kind) => {
                record.error(started, kind, window_start);
                sender = None;
                if let Some((presigned, pool)) = &mut paying {
                    presigned.resync(pool).await;
                }
            }
        }
    }
    (record, paying.map(|(presigned, _)| presigned))
}

fn payment_headers(headers: &mut HeaderMap, presigned: &Presigned, amount: u64, signature: &[u8]) {
    let text = |value: String| value.parse().expect("decimal and base64 are valid header values");
    headers.insert("snet-payment-type", "escrow".parse().expect("a valid header value"));
    headers.insert("snet-payment-channel-id", text(presigned.channel.to_string()));
    headers.insert("snet-payment-channel-nonce", text("0".to_owned()));
    headers.insert("snet-payment-channel-amount", text(amount.to_string()));
    headers.insert(
        "snet-payment-channel-signature-bin",
        text(base64::engine::general_purpose::STANDARD.encode(signature)),
    );
}

async fn connect(port: u16) -> Result<SendRequest<Full<Bytes>>, String> {
    let stream = TcpStream::connect(("127.0.0.1", port)).await.map_err(|_| "connect".to_owned())?;
    stream.set_nodelay(true).map_err(|_| "connect".to_owned())?;
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .map_err(|_| "handshake".to_owned())?;
    tokio::spawn(connection);
    Ok(sender)
}

/// One unary call: its `grpc-status` as text, or the kind of failure below gRPC.
async fn call(
    sender: &mut SendRequest<Full<Bytes>>,
    request: Request<Full<Bytes>>,
) -> Result<String, String> {
    sender.ready().await.map_err(|_| "transport".to_owned())?;
    let response = sender.send_request(request).await.map_err(|_| "transport".to_owned())?;
    let (parts, body) = response.into_parts();
    let collected = body.collect().await.map_err(|_| "transport".to_owned())?;
    let status = collected
        .trailers()
        .and_then(|trailers| trailers.get("grpc-status"))
        .or_else(|| parts.headers.get("grpc-status"))
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    match status {
        Some(status) => Ok(status),
        None if parts.status != http::StatusCode::OK => Ok(format!("http {}", parts.status.as_u16())),
        None => Ok("no grpc-status".to_owned()),
    }
}
