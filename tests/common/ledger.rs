//! `mpe-ledger serve` as a child process for the end-to-end tests and the benchmark: [`Ledger`],
//! configured by `MPE_LEDGER_*` variables (or a config file, [`Ledger::start_with_config`]), healthy
//! once `GET /healthz` answers 200 (over https trusting the test CA when it serves TLS), stopped with
//! SIGTERM when dropped; and one-shot commands such as `mpe-ledger verify` ([`run_command`]).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use alloy::primitives::Address;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

use super::e2e::{ScriptRun, free_port, group_id_base64};

/// How long `serve` may take to answer `/healthz`.
pub const LEDGER_STARTUP_TIMEOUT: Duration = Duration::from_secs(90);
/// How long `serve` may take to stop after SIGTERM before it is killed.
pub const LEDGER_STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// The chain settings of one `serve` replica.
#[derive(Debug, Clone)]
pub struct LedgerSettings {
    pub ethereum_rpc_url: String,
    pub mpe: Address,
    pub group_id: [u8; 32],
    pub payment_address: Address,
    pub price: u64,
    pub upstream: String,
    pub replica_id: String,
    /// The public port's certificate; `None` serves plain HTTP/1.1 and h2c.
    pub tls: Option<LedgerTls>,
    /// `ethereum_rpc_ca_file`, for an `https://` `ethereum_rpc_url`.
    pub ethereum_rpc_ca_file: Option<PathBuf>,
    /// `upstream_ca_file`, for an `https://` `upstream`.
    pub upstream_ca_file: Option<PathBuf>,
}

/// `tls_cert_file` and `tls_key_file`, and the CA the harness trusts to check `/healthz`.
#[derive(Debug, Clone)]
pub struct LedgerTls {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub ca_file: PathBuf,
}

/// `mpe-ledger serve` as a child process on a free port; SIGTERM when dropped.
pub struct Ledger {
    child: Option<std::process::Child>,
    pub port: u16,
    pub replica_id: String,
    /// The CA that the port's certificate chains to, when it serves TLS.
    tls_ca: Option<PathBuf>,
    log: PathBuf,
    _log_dir: tempfile::TempDir,
}

/// Every `MPE_LEDGER_*` setting `serve` reads; unset unless given, so the test's environment
/// cannot leak into the child.
const LEDGER_KEYS: [&str; 24] = [
    "LISTEN",
    "TLS_CERT_FILE",
    "TLS_KEY_FILE",
    "MAX_CONNECTIONS",
    "ETHEREUM_RPC_URL",
    "ETHEREUM_RPC_CA_FILE",
    "MPE_ADDRESS",
    "GROUP_ID",
    "PAYMENT_ADDRESS",
    "PAYMENT_EXPIRATION_THRESHOLD",
    "AVERAGE_BLOCK_TIME_MS",
    "CLAIMS_DUE_WITHIN_BLOCKS",
    "PRICE",
    "UPSTREAM",
    "UPSTREAM_CA_FILE",
    "REPLICA_ID",
    "LEASE_TTL_SECONDS",
    "CONFIRMATIONS",
    "MAX_MESSAGE_BYTES",
    "MAX_CALL_SECONDS",
    "MAX_CONCURRENT_CALLS",
    "AUDIT_LISTEN",
    "AUDIT_TOKENS",
    "CONFIG",
];

impl LedgerSettings {
    /// Chain settings that point at nothing (a closed loopback port): `serve` starts, records
    /// the MPE address and keeps retrying the node in the background; for tests of what `serve`
    /// does without paid calls.
    pub fn offline(replica_id: &str) -> Self {
        Self {
            ethereum_rpc_url: "http://127.0.0.1:9".to_owned(),
            mpe: Address::repeat_byte(0x11),
            group_id: [7; 32],
            payment_address: Address::repeat_byte(0x22),
            price: 1,
            upstream: "http://127.0.0.1:9".to_owned(),
            replica_id: replica_id.to_owned(),
            tls: None,
            ethereum_rpc_ca_file: None,
            upstream_ca_file: None,
        }
    }
}

impl Ledger {
    pub async fn start(database_url: &str, settings: &LedgerSettings) -> Self {
        Self::start_with_env(database_url, settings, &[]).await
    }

    /// [`Ledger::start`] with further `MPE_LEDGER_*` settings in `extra`.
    pub async fn start_with_env(
        database_url: &str,
        settings: &LedgerSettings,
        extra: &[(&str, String)],
    ) -> Self {
        Self::start_on(("DATABASE_URL".to_owned(), database_url.to_owned()), settings, extra).await
    }

    /// `serve` running its own embedded cluster in `data_dir` (no `DATABASE_URL`).
    pub async fn start_embedded(data_dir: &Path, settings: &LedgerSettings) -> Self {
        Self::start_on(("MPE_LEDGER_DATA_DIR".to_owned(), data_dir.display().to_string()), settings, &[])
            .await
    }

    /// `database`: the variable that says where the database is.
    async fn start_on(
        database: (String, String),
        settings: &LedgerSettings,
        extra: &[(&str, String)],
    ) -> Self {
        let port = free_port();
        let mut env = vec![
            database,
            ("MPE_LEDGER_ETHEREUM_RPC_URL".to_owned(), settings.ethereum_rpc_url.clone()),
            ("MPE_LEDGER_MPE_ADDRESS".to_owned(), settings.mpe.to_checksum(None)),
            ("MPE_LEDGER_GROUP_ID".to_owned(), group_id_base64(&settings.group_id)),
            ("MPE_LEDGER_PAYMENT_ADDRESS".to_owned(), settings.payment_address.to_checksum(None)),
            ("MPE_LEDGER_PRICE".to_owned(), settings.price.to_string()),
            ("MPE_LEDGER_UPSTREAM".to_owned(), settings.upstream.clone()),
            ("MPE_LEDGER_CONFIRMATIONS".to_owned(), "0".to_owned()),
            ("MPE_LEDGER_PAYMENT_EXPIRATION_THRESHOLD".to_owned(), "0".to_owned()),
            ("MPE_LEDGER_REPLICA_ID".to_owned(), settings.replica_id.clone()),
        ];
        let path = |path: &Path| path.display().to_string();
        if let Some(tls) = &settings.tls {
            env.push(("MPE_LEDGER_TLS_CERT_FILE".to_owned(), path(&tls.cert_file)));
            env.push(("MPE_LEDGER_TLS_KEY_FILE".to_owned(), path(&tls.key_file)));
        }
        if let Some(ca_file) = &settings.ethereum_rpc_ca_file {
            env.push(("MPE_LEDGER_ETHEREUM_RPC_CA_FILE".to_owned(), path(ca_file)));
        }
        if let Some(ca_file) = &settings.upstream_ca_file {
            env.push(("MPE_LEDGER_UPSTREAM_CA_FILE".to_owned(), path(ca_file)));
        }
        env.extend(extra.iter().map(|(key, value)| ((*key).to_owned(), value.clone())));
        let listen = format!("127.0.0.1:{port}");
        let tls_ca = settings.tls.as_ref().map(|tls| tls.ca_file.clone());
        Self::spawn(&settings.replica_id, port, tls_ca, &env, &["serve", "--listen", &listen]).await
    }

    /// `DATABASE_URL=… mpe-ledger serve --config CONFIG`, as the README runs it: every other
    /// setting comes from the file, whose `listen` must be `127.0.0.1:port`.
    pub async fn start_with_config(database_url: &str, config: &Path, port: u16, replica_id: &str) -> Self {
        let env = [("DATABASE_URL".to_owned(), database_url.to_owned())];
        let config = config.display().to_string();
        Self::spawn(replica_id, port, None, &env, &["serve", "--config", &config]).await
    }

    /// Starts `mpe-ledger ARGS` with exactly `env` of the ledger's settings (the test's own
    /// `MPE_LEDGER_*` are removed) and waits until it is healthy.
    async fn spawn(
        replica_id: &str,
        port: u16,
        tls_ca: Option<PathBuf>,
        env: &[(String, String)],
        args: &[&str],
    ) -> Self {
        let log_dir = tempfile::tempdir().expect("a temporary directory");
        let log = log_dir.path().join(format!("{replica_id}.log"));
        let log_file = std::fs::File::create(&log).expect("the ledger's log file");
        println!(
            "\n>>> {} mpe-ledger {}",
            env.iter()
                .map(|(k, v)| if k == "DATABASE_URL" {
                    format!("{k}=<test database>")
                } else {
                    format!("{k}={v}")
                })
                .collect::<Vec<_>>()
                .join(" "),
            args.join(" ")
        );
        let mut command = std::process::Command::new(serve_binary());
        command.args(args);
        for key in LEDGER_KEYS {
            command.env_remove(format!("MPE_LEDGER_{key}"));
        }
        command
            .env_remove("DATABASE_URL")
            .env_remove("MIGRATION_DATABASE_URL")
            .env_remove("MPE_LEDGER_DATA_DIR")
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("RUST_LOG", "info,sqlx=warn")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("a second log handle"))
            .stderr(log_file);
        let child = command.spawn().expect("start mpe-ledger serve");
        let mut ledger = Self {
            child: Some(child),
            port,
            replica_id: replica_id.to_owned(),
            tls_ca,
            log,
            _log_dir: log_dir,
        };
        ledger.wait_healthy().await;
        println!("<<< {} healthy on {}", ledger.replica_id, ledger.endpoint());
        ledger
    }

    async fn wait_healthy(&mut self) {
        let deadline = Instant::now() + LEDGER_STARTUP_TIMEOUT;
        loop {
            if self.healthz().await == Some(200) {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("serve ({}) exited early with {status}:\n{}", self.replica_id, self.log());
            }
            assert!(
                Instant::now() < deadline,
                "serve ({}) was not healthy in time:\n{}",
                self.replica_id,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The status of `GET /healthz` (over https trusting the test CA when the port serves TLS),
    /// `None` when there is no answer.
    pub async fn healthz(&self) -> Option<u16> {
        match &self.tls_ca {
            Some(ca) => super::tls::https_get(self.port, "/healthz", ca, mpe_ledger::tls::ALPN_HTTP1)
                .await
                .ok()
                .map(|(status, _, _)| status),
            None => http_get(self.port, "/healthz").await.ok().map(|(status, _)| status),
        }
    }

    /// The endpoint for the clients: `http://127.0.0.1:<port>`, or `https://` when it serves TLS.
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls_ca.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// Sends `signal` to the running `serve` (e.g. SIGHUP to reload its certificate).
    pub fn signal(&self, signal: Signal) {
        let child = self.child.as_ref().expect("serve is running");
        kill(Pid::from_raw(child.id() as i32), signal).expect("signal serve");
    }

    /// Waits until the log holds `needle` `count` times; false after `timeout`.
    pub async fn wait_for_log(&self, needle: &str, count: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.log().matches(needle).count() < count {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        true
    }

    /// The process id of the running `serve` (`None` once stopped), e.g. to read its peak memory.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(std::process::Child::id)
    }

    /// The peak resident memory of the running `serve` so far, in MiB (`VmHWM` of /proc); `None`
    /// once stopped or without /proc.
    pub fn peak_rss_mib(&self) -> Option<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
        let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib / 1024.0)
    }

    /// What the replica has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then waits for the exit (killing it after [`LEDGER_STOP_TIMEOUT`]); returns whether
    /// it exited successfully.
    pub fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else { return true };
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + LEDGER_STOP_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return status.success(),
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return false;
                }
            }
        }
    }
}

impl Drop for Ledger {
    fn drop(&mut self) {
        let stopped = self.stop();
        if std::thread::panicking() || !stopped {
            println!(
                "----- log of serve ({}) -----\n{}\n----- end of log -----",
                self.replica_id,
                self.log()
            );
        }
    }
}

/// A plain HTTP/1.1 GET on the loopback: status code and body.
pub async fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    http_get_with(port, path, &[]).await
}

/// [`http_get`] with request `headers` (name, value).
pub async fn http_get_with(
    port: u16,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<(u16, String)> {
    http_get_at(("127.0.0.1", port), path, headers).await
}

/// [`http_get_with`] on any address.
pub async fn http_get_at(
    address: impl tokio::net::ToSocketAddrs,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(address).await?;
    let headers: String = headers.iter().map(|(name, value)| format!("{name}: {value}\r\n")).collect();
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{headers}Connection: close\r\n\r\n")
                .as_bytes(),
        )
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let status = response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default();
    Ok((status, body))
}

/// `mpe-ledger verify` on `database_url`, printed like a client command.
pub async fn verify(database_url: &str) -> ScriptRun {
    run_command(&["verify"], &[("DATABASE_URL", database_url)]).await
}

/// `mpe-ledger ARGS` with exactly `env` of the database settings (`DATABASE_URL`,
/// `MIGRATION_DATABASE_URL`, `MPE_LEDGER_DATA_DIR`; the test's own are removed), stdin closed and
/// stdout and stderr captured (so both are pipes, never a terminal); printed like a client command
/// (URLs hidden) with its output.
pub async fn run_command(args: &[&str], env: &[(&str, &str)]) -> ScriptRun {
    let shown: Vec<String> =
        env.iter()
            .map(|(key, value)| {
                if key.ends_with("_URL") {
                    format!("{key}=<test database>")
                } else {
                    format!("{key}={value}")
                }
            })
            .collect();
    let command = format!("{} mpe-ledger {}", shown.join(" "), args.join(" "));
    println!("\n>>> {command}");
    let output = Command::new(env!("CARGO_BIN_EXE_mpe-ledger"))
        .args(args)
        .env_remove("DATABASE_URL")
        .env_remove("MIGRATION_DATABASE_URL")
        .env_remove("MPE_LEDGER_DATA_DIR")
        .envs(env.iter().copied())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .await
        .expect("run mpe-ledger");
    let run = ScriptRun {
        command,
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    };
    if run.stdout.len() < 4096 {
        println!("{}{}<<< exit {:?}", run.stdout, run.stderr, run.code);
    } else {
        println!("({} bytes of output){}<<< exit {:?}", run.stdout.len(), run.stderr, run.code);
    }
    run
}

/// The `ledger.toml` of the README's "Put mpe-ledger in front of your AI service", as written
/// there, with the value of each key in `values` replaced (the placeholders: the chain, the
/// contract, the group, the payment address, the listen address and the upstream). Panics when the
/// README has no such block or lacks one of the keys, so the test follows the README as it is.
pub fn readme_ledger_toml(values: &[(&str, String)]) -> String {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).expect("README.md");
    let section =
        readme.split("## Put mpe-ledger in front of your AI service").nth(1).expect("the README's section");
    let block =
        section.split("```toml\n").nth(1).and_then(|rest| rest.split("```").next()).expect("its toml block");
    let mut replaced = Vec::new();
    let lines: Vec<String> = block
        .lines()
        .map(|line| {
            let line = line.trim_start();
            let key = line.split('=').next().unwrap_or_default().trim();
            match values.iter().find(|(name, _)| *name == key && !line.starts_with('#')) {
                Some((name, value)) => {
                    replaced.push(*name);
                    format!("{name} = {}", toml_string(value))
                }
                None => line.to_owned(),
            }
        })
        .collect();
    for (name, _) in values {
        assert!(replaced.contains(name), "the README's ledger.toml has no {name}");
    }
    lines.join("\n") + "\n"
}

fn toml_string(value: &str) -> String {
    format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The binary started as `serve`: this build's, or the one `MPE_LEDGER_BENCH_SERVE_BIN` names, so
/// that the bench can run another build's `serve` under the same load (README, "Comparing two
/// builds"). One-shot commands always run this build's binary.
pub fn serve_binary() -> PathBuf {
    std::env::var_os("MPE_LEDGER_BENCH_SERVE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_mpe-ledger")))
}
