//! A TCP proxy in front of Postgres that can lose one COMMIT acknowledgement: the fault a crash or
//! a network cut causes between the server committing and the client hearing of it, which cannot be
//! caused on demand otherwise. This is a fake of the network only: the database behind it is real,
//! and the COMMIT really runs.
//!
//! Armed with [`PgProxy::lose_next_commit_reply`], the proxy forwards the next simple-query `COMMIT`
//! of any connection to the server, lets the server answer, throws the answer away and closes both
//! sides of that connection. Armed with [`PgProxy::hold_next_commit`], it keeps the next `COMMIT`
//! from the server and relays nothing more on that connection, in either direction, until
//! [`PgProxy::release_held`] closes both sides: the client's COMMIT is in flight for as long as the
//! test wants (a crash meanwhile is a crash before the server saw it). Armed with
//! [`PgProxy::cut_next_message_containing`], it closes the connection that sends the next message
//! holding those bytes (a statement's text, when it is parsed), without sending it. Everything else
//! is relayed byte for byte.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// A simple-query message `Q`, its length (4 + "COMMIT\0"), "COMMIT\0".
const COMMIT_QUERY: &[u8] = b"Q\x00\x00\x00\x0bCOMMIT\x00";

#[derive(Default)]
struct Faults {
    armed: AtomicBool,
    cut: AtomicUsize,
    hold_armed: AtomicBool,
    held: AtomicUsize,
    release: Notify,
    released: AtomicBool,
    cut_on: std::sync::Mutex<Option<&'static [u8]>>,
    cut_messages: AtomicUsize,
}

pub struct PgProxy {
    pub port: u16,
    faults: Arc<Faults>,
    task: JoinHandle<()>,
}

impl Drop for PgProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PgProxy {
    /// Relays a free loopback port to `upstream_port` on the loopback.
    pub async fn start(upstream_port: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a free loopback port");
        let port = listener.local_addr().unwrap().port();
        let faults = Arc::new(Faults::default());
        let shared = faults.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else { continue };
                let faults = shared.clone();
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(("127.0.0.1", upstream_port)).await {
                        relay(client, server, faults).await;
                    }
                });
            }
        });
        Self { port, faults, task }
    }

    /// `url` (a `postgres://` URL of the proxied server) with the proxy's port.
    pub fn url(&self, url: &str) -> String {
        let (scheme, rest) = url.split_once("://").expect("a URL");
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (userinfo, _) = authority.rsplit_once('@').map_or(("", authority), |(u, h)| (u, h));
        let at = if userinfo.is_empty() { String::new() } else { format!("{userinfo}@") };
        format!("{scheme}://{at}127.0.0.1:{}/{path}", self.port)
    }

    /// The next COMMIT's acknowledgement is lost (module doc).
    pub fn lose_next_commit_reply(&self) {
        self.faults.armed.store(true, Ordering::SeqCst);
    }

    /// How many COMMIT acknowledgements were lost so far.
    pub fn lost_commit_replies(&self) -> usize {
        self.faults.cut.load(Ordering::SeqCst)
    }

    /// The connection that next sends a message holding `bytes` is closed instead (module doc).
    pub fn cut_next_message_containing(&self, bytes: &'static [u8]) {
        *self.faults.cut_on.lock().unwrap() = Some(bytes);
    }

    /// How many connections [`Self::cut_next_message_containing`] closed so far.
    pub fn cut_messages(&self) -> usize {
        self.faults.cut_messages.load(Ordering::SeqCst)
    }

    /// The next COMMIT is held back from the server (module doc).
    pub fn hold_next_commit(&self) {
        self.faults.hold_armed.store(true, Ordering::SeqCst);
    }

    /// How many COMMITs are held back now.
    pub fn held_commits(&self) -> usize {
        self.faults.held.load(Ordering::SeqCst)
    }

    /// Closes the connections whose COMMIT is held, without sending it (once: a COMMIT held after
    /// this is released at once).
    pub fn release_held(&self) {
        self.faults.released.store(true, Ordering::SeqCst);
        self.faults.release.notify_waiters();
    }
}

/// Waits until [`PgProxy::release_held`] was called.
async fn until_released(faults: &Faults) {
    loop {
        let released = faults.release.notified();
        if faults.released.load(Ordering::SeqCst) {
            return;
        }
        released.await;
    }
}

async fn relay(client: TcpStream, server: TcpStream, faults: Arc<Faults>) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let cut = Arc::new(AtomicBool::new(false));
    let cutting = cut.clone();
    let held = Arc::new(AtomicBool::new(false));
    let holding = held.clone();
    let downstream_faults = faults.clone();
    let upstream = async move {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let n = match client_read.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let chunk = &buffer[..n];
            {
                let mut cut_on = faults.cut_on.lock().unwrap();
                if cut_on.is_some_and(|bytes| chunk.windows(bytes.len()).any(|w| w == bytes)) {
                    *cut_on = None;
                    faults.cut_messages.fetch_add(1, Ordering::SeqCst);
                    return;
                }
            }
            let commit = chunk.windows(COMMIT_QUERY.len()).any(|w| w == COMMIT_QUERY);
            if commit && faults.hold_armed.swap(false, Ordering::SeqCst) {
                holding.store(true, Ordering::SeqCst);
                faults.held.fetch_add(1, Ordering::SeqCst);
                until_released(&faults).await;
                faults.held.fetch_sub(1, Ordering::SeqCst);
                return;
            }
            if commit && faults.armed.swap(false, Ordering::SeqCst) {
                cutting.store(true, Ordering::SeqCst);
                faults.cut.fetch_add(1, Ordering::SeqCst);
            }
            if server_write.write_all(chunk).await.is_err() {
                return;
            }
        }
    };
    let downstream = async move {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let read = server_read.read(&mut buffer).await;
            if held.load(Ordering::SeqCst) {
                // What the server says or does (its backend dying, say) waits with the held COMMIT.
                until_released(&downstream_faults).await;
                return;
            }
            let n = match read {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if cut.load(Ordering::SeqCst) {
                // The server answered the COMMIT: give it a moment to finish, then hang up on both.
                tokio::time::sleep(Duration::from_millis(50)).await;
                return;
            }
            if client_write.write_all(&buffer[..n]).await.is_err() {
                return;
            }
        }
    };
    // Whichever direction ends first ends the connection: both halves are dropped here.
    tokio::select! {
        _ = upstream => {}
        _ = downstream => {}
    }
}
