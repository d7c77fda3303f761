//! End-to-end harness: the real SingularityNET clients (snet-cli 3.1.1, snet-sdk 6.0.0, from the
//! test environment's virtualenv) paying through `mpe-ledger serve` on a real chain and a real
//! Postgres, with the example Calculator service of `tests/e2e/` behind it.
//!
//! Pieces:
//! - The chain is the shared [`super::ganache::Ganache`] (whose `net_version` equals its chain id,
//!   as snet-cli needs) with the token and the MPE of [`super::ganache::Mpe`].
//! - [`ExampleService`]: `tests/e2e/example_service.py`, recording the `snet-user-address` of every
//!   call it receives.
//! - [`super::ledger::Ledger`]: `mpe-ledger serve` as a child process (in `ledger.rs`),
//!   healthy once `GET /healthz` answers 200 (over https trusting the test CA when it serves TLS);
//!   stopped with SIGTERM when dropped.
//! - [`SnetCli`] and [`sdk_calls`]: `tests/e2e/snet_cli.py` and `tests/e2e/snet_sdk_calls.py`.
//!
//! Every client command and its whole output are printed (`println!`), so a test log shows exactly
//! what ran and what the clients said.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use alloy::primitives::Address;
use base64::Engine;
use mpe_ledger::domain::ChannelId;
use sqlx::PgPool;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::ganache::{Account, Ganache, Mpe, STARTUP_TIMEOUT, test_env};

/// How long one client script may run (snet-cli takes 2–3 s per invocation to start).
pub const SCRIPT_TIMEOUT: Duration = Duration::from_secs(300);

/// `tests/e2e/` of this crate.
pub fn e2e_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e")
}

/// The virtualenv's python, which has snet-cli, snet-sdk and grpcio-tools.
pub fn python() -> PathBuf {
    let python = test_env().join("venv/bin/python");
    assert!(python.exists(), "{} is missing: run scripts/install-deps.sh", python.display());
    python
}

pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free local port");
    listener.local_addr().expect("a bound address").port()
}

/// base64 of a group id, as org metadata and `MPE_LEDGER_GROUP_ID` write it.
pub fn group_id_base64(group_id: &[u8; 32]) -> String {
    base64::engine::general_purpose::STANDARD.encode(group_id)
}

/// `0x` + hex of a private key, as the clients take it.
pub fn key_hex(account: &Account) -> String {
    format!("{:#x}", account.key)
}

/// An amount of cogs as snet-cli prints it: FET with 18 decimals, no trailing zeros
/// (`cogs2strtoken`: 20 cogs → `0.00000000000000002`, 10^18 → `1`).
pub fn cogs_to_fet(cogs: u128) -> String {
    const ONE: u128 = 1_000_000_000_000_000_000;
    let (whole, fraction) = (cogs / ONE, cogs % ONE);
    if fraction == 0 {
        return whole.to_string();
    }
    let fraction = format!("{fraction:018}");
    format!("{whole}.{}", fraction.trim_end_matches('0'))
}

// ------------------------------------------------------------------------------------------------
// Running the Python scripts

/// One finished script: the command, its exit status and output.
#[derive(Debug)]
pub struct ScriptRun {
    pub command: String,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl ScriptRun {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    #[track_caller]
    pub fn assert_success(&self) -> &Self {
        assert!(
            self.success(),
            "failed ({:?}): {}\n{}\n{}",
            self.code,
            self.command,
            self.stdout,
            self.stderr
        );
        self
    }

    #[track_caller]
    pub fn assert_stdout_contains(&self, needle: &str) -> &Self {
        assert!(
            self.stdout.contains(needle),
            "{:?} not in the output of {}:\n{}",
            needle,
            self.command,
            self.stdout
        );
        self
    }

    /// The value of the first stdout line `KEY=value`.
    pub fn value_of(&self, key: &str) -> Option<String> {
        let prefix = format!("{key}=");
        self.stdout.lines().find_map(|line| line.strip_prefix(&prefix).map(|v| v.trim().to_owned()))
    }
}

fn shell_quote(arg: &str) -> String {
    if !arg.is_empty() && arg.chars().all(|c| c.is_ascii_alphanumeric() || "-_./:=+@,".contains(c)) {
        arg.to_owned()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

/// Runs `python tests/e2e/<script> <args>` in `cwd` with the variables `env` added to the
/// test's environment, prints the command and its whole output.
pub async fn run_script(script: &str, args: &[String], cwd: &Path, env: &[(String, String)]) -> ScriptRun {
    let path = e2e_dir().join(script);
    let command = env
        .iter()
        .map(|(key, value)| format!("{key}={}", shell_quote(value)))
        .chain(std::iter::once(format!("python tests/e2e/{script}")))
        .chain(args.iter().map(|a| shell_quote(a)))
        .collect::<Vec<_>>()
        .join(" ");
    println!("\n>>> {command}");
    let started = Instant::now();
    let child = Command::new(python())
        .arg(&path)
        .args(args)
        .current_dir(cwd)
        .env("PYTHONUNBUFFERED", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .envs(env.iter().map(|(key, value)| (key, value)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", path.display()));
    let output = tokio::time::timeout(SCRIPT_TIMEOUT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{command} did not finish within {SCRIPT_TIMEOUT:?}"))
        .expect("the script's output is readable");
    let run = ScriptRun {
        command,
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    };
    println!("{}", run.stdout.trim_end());
    if !run.stderr.trim().is_empty() {
        println!("[script stderr]\n{}", run.stderr.trim_end());
    }
    println!("<<< exit {:?} after {:.1} s", run.code, started.elapsed().as_secs_f64());
    run
}

/// The environment under which the client scripts trust the CA of `ca_file` as well as their
/// bundled roots, through `tests/e2e/test_ca_sitecustomize.py` (why and how: its docstring). The
/// directory holding it as `sitecustomize.py` must outlive the scripts run with the variables.
pub fn clients_trusting(ca_file: &Path) -> (tempfile::TempDir, Vec<(String, String)>) {
    let dir = tempfile::tempdir().expect("a directory for sitecustomize.py");
    std::fs::copy(e2e_dir().join("test_ca_sitecustomize.py"), dir.path().join("sitecustomize.py"))
        .expect("copy the sitecustomize of the TLS test");
    let env = vec![
        ("PYTHONPATH".to_owned(), dir.path().display().to_string()),
        ("MPE_LEDGER_TEST_CA_FILE".to_owned(), ca_file.display().to_string()),
    ];
    (dir, env)
}

// ------------------------------------------------------------------------------------------------
// The example service

/// `tests/e2e/example_service.py` on a free port; killed when dropped.
pub struct ExampleService {
    _child: Child,
    pub port: u16,
    calls: Arc<Mutex<Vec<serde_json::Value>>>,
}

impl ExampleService {
    pub async fn start() -> Self {
        let port = free_port();
        let mut child = Command::new(python())
            .arg(e2e_dir().join("example_service.py"))
            .arg(port.to_string())
            .env("PYTHONUNBUFFERED", "1")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start example_service.py");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout is piped")).lines();
        tokio::time::timeout(STARTUP_TIMEOUT, async {
            while let Some(line) = lines.next_line().await.expect("readable stdout") {
                if line.starts_with("LISTENING ") {
                    return;
                }
            }
            panic!("example_service.py exited before listening on {port}");
        })
        .await
        .expect("the example service listens within STARTUP_TIMEOUT");
        let calls = Arc::new(Mutex::new(Vec::new()));
        let recorded = calls.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                println!("[example service] {line}");
                if let Ok(call) = serde_json::from_str(&line) {
                    recorded.lock().unwrap().push(call);
                }
            }
        });
        Self { _child: child, port, calls }
    }

    /// What the ledger forwards to: `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every call received so far, as the service printed it.
    pub fn calls(&self) -> Vec<serde_json::Value> {
        self.calls.lock().unwrap().clone()
    }

    /// The `snet-user-address` of every call received so far (`None` when absent).
    pub fn user_addresses(&self) -> Vec<Option<String>> {
        self.calls().iter().map(|call| call["snet-user-address"].as_str().map(str::to_owned)).collect()
    }

    /// Waits (briefly: the service prints before it answers) until `n` calls have been printed.
    pub async fn wait_for_calls(&self, n: usize) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.calls.lock().unwrap().len() < n && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.calls()
    }
}

// ------------------------------------------------------------------------------------------------
// snet-cli

/// What `snet_cli.py setup` needs.
#[derive(Debug, Clone)]
pub struct CliSetup<'a> {
    pub ganache: &'a Ganache,
    pub mpe: &'a Mpe<'a>,
    pub client: &'a Account,
    pub treasurer: &'a Account,
    pub org: &'a str,
    pub service: &'a str,
    pub group: &'a str,
    pub group_id: [u8; 32],
    pub price: u64,
    /// The endpoint written into the service metadata (`client call` without `--endpoint`).
    pub endpoint: String,
    /// Open the client's channel with snet itself, with this value in cogs.
    pub open_channel: Option<u64>,
}

/// snet-cli with a scratch HOME, set up by `tests/e2e/snet_cli.py setup`.
pub struct SnetCli {
    home: tempfile::TempDir,
    /// Added to the environment of every later command ([`SnetCli::with_env`]).
    env: Vec<(String, String)>,
}

impl SnetCli {
    /// Runs the offline setup and asserts it succeeded; returns its run (with `CHANNEL_ID=` when
    /// snet opened the channel).
    pub async fn setup(setup: &CliSetup<'_>) -> (Self, ScriptRun) {
        let home = tempfile::tempdir().expect("a scratch HOME");
        let mut args = vec![
            "--eth-rpc".to_owned(),
            setup.ganache.url().to_owned(),
            "--mpe".to_owned(),
            setup.mpe.address.to_checksum(None),
            "--token".to_owned(),
            setup.mpe.token.to_checksum(None),
            "--client-key".to_owned(),
            key_hex(setup.client),
            "--treasurer-key".to_owned(),
            key_hex(setup.treasurer),
            "--org".to_owned(),
            setup.org.to_owned(),
            "--service".to_owned(),
            setup.service.to_owned(),
            "--group".to_owned(),
            setup.group.to_owned(),
            "--group-id".to_owned(),
            group_id_base64(&setup.group_id),
            "--price".to_owned(),
            setup.price.to_string(),
            "--payment-address".to_owned(),
            setup.treasurer.address.to_checksum(None),
            "--endpoint".to_owned(),
            setup.endpoint.clone(),
        ];
        if let Some(value) = setup.open_channel {
            args.extend(["--open-channel".to_owned(), value.to_string()]);
        }
        let cli = Self { home, env: Vec::new() };
        let run = cli.run("setup", args).await;
        run.assert_success();
        (cli, run)
    }

    async fn run(&self, command: &str, args: Vec<String>) -> ScriptRun {
        let mut all = vec!["--home".to_owned(), self.home.path().display().to_string(), command.to_owned()];
        all.extend(args);
        run_script("snet_cli.py", &all, self.home.path(), &self.env).await
    }

    /// Every later command runs with `env` added to its environment.
    pub fn with_env(mut self, env: Vec<(String, String)>) -> Self {
        self.env = env;
        self
    }

    /// `snet client ARGS` as the client identity.
    pub async fn client(&self, args: &[&str]) -> ScriptRun {
        self.run("client", args.iter().map(|a| a.to_string()).collect()).await
    }

    /// `snet treasurer ARGS` as the treasurer (provider) identity.
    pub async fn treasurer(&self, args: &[&str]) -> ScriptRun {
        self.run("treasurer", args.iter().map(|a| a.to_string()).collect()).await
    }
}

// ------------------------------------------------------------------------------------------------
// snet-sdk

/// What `snet_sdk_calls.py` needs.
#[derive(Debug, Clone)]
pub struct SdkCalls<'a> {
    pub ganache: &'a Ganache,
    pub mpe: &'a Mpe<'a>,
    pub client: &'a Account,
    pub payment_address: Address,
    pub group_id: [u8; 32],
    pub price: u64,
    /// Calls go round-robin over these.
    pub endpoints: Vec<String>,
    pub calls: usize,
    /// Finish with one paid server-streaming call.
    pub stream: bool,
    /// Go on after a failed call (and report `failed_calls`).
    pub keep_going: bool,
}

/// The outcome of `snet_sdk_calls.py`.
#[derive(Debug)]
pub struct SdkRun {
    pub run: ScriptRun,
    pub successful_calls: u64,
    pub failed_calls: u64,
}

/// Runs `tests/e2e/snet_sdk_calls.py` with a scratch HOME.
pub async fn sdk_calls(calls: &SdkCalls<'_>) -> SdkRun {
    sdk_calls_with_env(calls, &[]).await
}

/// [`sdk_calls`] with `env` added to the script's environment.
pub async fn sdk_calls_with_env(calls: &SdkCalls<'_>, env: &[(String, String)]) -> SdkRun {
    let home = tempfile::tempdir().expect("a scratch HOME");
    let mut args = vec![
        "--home".to_owned(),
        home.path().display().to_string(),
        "--eth-rpc".to_owned(),
        calls.ganache.url().to_owned(),
        "--mpe".to_owned(),
        calls.mpe.address.to_checksum(None),
        "--token".to_owned(),
        calls.mpe.token.to_checksum(None),
        "--private-key".to_owned(),
        key_hex(calls.client),
        "--payment-address".to_owned(),
        calls.payment_address.to_checksum(None),
        "--group-id".to_owned(),
        group_id_base64(&calls.group_id),
        "--price".to_owned(),
        calls.price.to_string(),
        "--calls".to_owned(),
        calls.calls.to_string(),
    ];
    for endpoint in &calls.endpoints {
        args.extend(["--endpoint".to_owned(), endpoint.clone()]);
    }
    if calls.stream {
        args.push("--stream".to_owned());
    }
    if calls.keep_going {
        args.push("--keep-going".to_owned());
    }
    let run = run_script("snet_sdk_calls.py", &args, home.path(), env).await;
    let count = |key: &str| run.value_of(key).and_then(|v| v.parse().ok()).unwrap_or(0);
    let (successful_calls, failed_calls) = (count("successful_calls"), count("failed_calls"));
    SdkRun { run, successful_calls, failed_calls }
}

// ------------------------------------------------------------------------------------------------
// The event log

/// Sum over every `payment_accepted` event of what it added: its cumulative amount minus the
/// previous accepted amount of the same channel and nonce (0 for the first at a nonce).
pub async fn accepted_increments(pool: &PgPool) -> u128 {
    let total: String = sqlx::query_scalar(
        "SELECT COALESCE(SUM(amount - COALESCE(previous, 0)), 0)::text FROM (
             SELECT amount, lag(amount) OVER (PARTITION BY stream, nonce ORDER BY stream_version) AS previous
             FROM ledger.events WHERE event_type = 'payment_accepted') accepted",
    )
    .fetch_one(pool)
    .await
    .expect("sum of payment_accepted increments");
    total.parse().expect("a whole number")
}

/// How many events of `event_type` the log holds for `channel`.
pub async fn event_count(pool: &PgPool, event_type: &str, channel: ChannelId) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM ledger.events WHERE event_type = $1 AND channel_id = $2::text::numeric",
    )
    .bind(event_type)
    .bind(channel.to_string())
    .fetch_one(pool)
    .await
    .expect("count events")
}

/// Every event of the log, one line each (`position stream version type payload`), for the test log.
pub async fn event_log(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT position || ' ' || stream || ' v' || stream_version || ' ' || event_type || ' ' || payload::text
         FROM ledger.events ORDER BY position",
    )
    .fetch_all(pool)
    .await
    .expect("read the event log")
}

/// Polls until `channel` has at least one `event_type` event, or `timeout` passes.
pub async fn wait_for_event(pool: &PgPool, event_type: &str, channel: ChannelId, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if event_count(pool, event_type, channel).await > 0 {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[test]
fn cogs_print_as_snet_cli_prints_them() {
    assert_eq!(cogs_to_fet(20), "0.00000000000000002");
    assert_eq!(cogs_to_fet(1000), "0.000000000000001");
    assert_eq!(cogs_to_fet(0), "0");
    assert_eq!(cogs_to_fet(1_000_000_000_000_000_000), "1");
    assert_eq!(cogs_to_fet(1_500_000_000_000_000_000), "1.5");
}
