//! A real Ethereum chain for end-to-end tests: a ganache node per test, and the real MultiPartyEscrow
//! and SingularityNetToken deployed on it from the bytecode of the installed `snet-contracts`.
//!
//! Nothing here is committed from elsewhere: ganache and the contract artifacts live in the test
//! environment that `scripts/install-deps.sh` installs (`MPE_LEDGER_TEST_ENV`, default `.test-env/`
//! at the repository root) and are read at test time. Every helper that changes the chain sends a
//! real transaction from the account that the contract expects and waits for its receipt, so a
//! helper that returns has been mined.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use alloy::network::TransactionBuilder;
use alloy::primitives::{Address, B256, Bytes, U256};
use alloy::providers::{Provider, ProviderBuilder, RootProvider};
use alloy::rpc::types::{TransactionReceipt, TransactionRequest};
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::{SolCall, SolConstructor, SolValue};
use mpe_ledger::chain::mpe::MultiPartyEscrow;
use mpe_ledger::domain::signature::{normalized, payment_message, sign};
use mpe_ledger::domain::{Amount, ChannelId, EthAddress, Nonce, Signature};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Ganache must answer JSON-RPC within this long after it is started.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Ganache's chain id with the flags used here, and its network id (`net_version`) too: snet-cli
/// signs transactions with `net_version` as the chain id, and ganache's default network id is its
/// start time.
pub const CHAIN_ID: u64 = 1337;
/// How many funded accounts `--wallet.deterministic` creates.
const ACCOUNTS: usize = 10;

alloy::sol! {
    /// The parts of the AGIX-style token the harness uses (the deployer holds the minter role).
    contract SingularityNetToken {
        constructor(string name, string symbol);
        function mint(address to, uint256 amount) external;
        function approve(address spender, uint256 amount) external returns (bool);
        function balanceOf(address account) external view returns (uint256);
    }
}

/// The installed test environment; panics, naming the install script, when it is missing.
pub fn test_env() -> PathBuf {
    let dir = std::env::var_os("MPE_LEDGER_TEST_ENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".test-env"));
    require(&dir);
    dir
}

fn require(path: &Path) {
    assert!(
        path.exists(),
        "{} is missing: install the end-to-end test environment with scripts/install-deps.sh \
         (or point MPE_LEDGER_TEST_ENV at one)",
        path.display()
    );
}

/// `snet/contracts/resources` inside the test environment's virtualenv.
pub fn contract_resources() -> PathBuf {
    let lib = test_env().join("venv/lib");
    require(&lib);
    let python = std::fs::read_dir(&lib)
        .unwrap_or_else(|e| panic!("{}: {e}", lib.display()))
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|path| path.file_name().is_some_and(|name| name.to_string_lossy().starts_with("python3")))
        .unwrap_or_else(|| lib.join("python3"));
    let resources = python.join("site-packages/snet/contracts/resources");
    require(&resources);
    resources
}

/// The ABI JSON of a contract of `snet-contracts`.
pub fn contract_abi(name: &str) -> serde_json::Value {
    let path = contract_resources().join(format!("abi/{name}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The creation bytecode of a contract of `snet-contracts` (its file is a JSON string of `0x` hex).
pub fn contract_bytecode(name: &str) -> Bytes {
    let path = contract_resources().join(format!("bytecode/{name}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let hex: String = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    hex.parse().unwrap_or_else(|e| panic!("{}: not hex: {e}", path.display()))
}

/// One of ganache's funded accounts.
#[derive(Debug, Clone)]
pub struct Account {
    pub key: B256,
    pub address: Address,
}

impl Account {
    fn from_key(key: B256) -> Self {
        let address = PrivateKeySigner::from_bytes(&key).expect("ganache prints valid keys").address();
        Self { key, address }
    }

    pub fn signer(&self) -> PrivateKeySigner {
        PrivateKeySigner::from_bytes(&self.key).expect("ganache prints valid keys")
    }

    pub fn eth_address(&self) -> EthAddress {
        EthAddress(self.address)
    }
}

/// [`Mpe::sign_payment`] knowing only the contract's address (for tasks that outlive the chain's
/// borrow).
pub fn sign_payment(mpe: &EthAddress, signer: &Account, id: ChannelId, nonce: u64, amount: u64) -> Signature {
    let message = payment_message(mpe, id, Nonce::from(nonce), Amount::from(amount));
    sign(&message, &signer.key.0)
}

/// A ganache node (`net_version` = chain id) on a free local port, killed when dropped.
#[derive(Debug)]
pub struct Ganache {
    _child: Child,
    url: String,
    accounts: Vec<Account>,
}

impl Ganache {
    pub async fn start() -> Self {
        // alloy's HTTP transport has TLS compiled in, which needs the process's crypto provider.
        mpe_ledger::tls::install_crypto_provider();
        let ganache = test_env().join("node_modules/.bin/ganache");
        require(&ganache);
        let port = free_port();
        let id = CHAIN_ID.to_string();
        let mut child = Command::new(ganache)
            .args(["--wallet.deterministic", "--chain.chainId", &id, "--chain.networkId", &id])
            .args(["--server.host", "127.0.0.1", "--server.port", &port.to_string(), "--logging.quiet"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("ganache does not start ({e}): run scripts/install-deps.sh"));
        let stdout = child.stdout.take().expect("stdout is piped");
        let url = format!("http://127.0.0.1:{port}");
        let accounts = tokio::time::timeout(STARTUP_TIMEOUT, async {
            // The banner lists the deterministic private keys, then says where it listens.
            let mut lines = BufReader::new(stdout).lines();
            let mut keys = Vec::new();
            let mut in_keys = false;
            while let Some(line) = lines.next_line().await.expect("ganache's stdout is readable") {
                let line = line.trim();
                if line.starts_with("Private Keys") {
                    in_keys = true;
                } else if in_keys && line.starts_with('(') {
                    let key = line.rsplit(' ').next().expect("a key after the index");
                    keys.push(Account::from_key(key.parse().expect("a 32-byte hex key")));
                } else if in_keys && !line.starts_with('=') {
                    in_keys = false;
                }
                if line.starts_with("RPC Listening on") {
                    // Keep draining so that ganache never blocks on a full pipe.
                    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
                    return keys;
                }
            }
            panic!("ganache exited before listening on port {port}");
        })
        .await
        .expect("ganache listens within STARTUP_TIMEOUT");
        assert_eq!(accounts.len(), ACCOUNTS, "ganache printed {} keys", accounts.len());
        let ganache = Self { _child: child, url, accounts };
        ganache.wait_until_answering().await;
        ganache
    }

    async fn wait_until_answering(&self) {
        let provider = self.provider();
        let answered = tokio::time::timeout(STARTUP_TIMEOUT, async {
            loop {
                if let Ok(id) = provider.get_chain_id().await {
                    return id;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .expect("ganache answers JSON-RPC within STARTUP_TIMEOUT");
        assert_eq!(answered, CHAIN_ID);
        let network: String =
            provider.raw_request(Cow::Borrowed("net_version"), ()).await.expect("net_version answers");
        assert_eq!(network, CHAIN_ID.to_string(), "snet-cli needs net_version = chain id");
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The ten accounts of the `-d` mnemonic, in ganache's order; account 0 deploys.
    pub fn accounts(&self) -> &[Account] {
        &self.accounts
    }

    pub fn account(&self, index: usize) -> &Account {
        &self.accounts[index]
    }

    /// A provider without a wallet, for reads and ganache's own methods.
    pub fn provider(&self) -> RootProvider {
        RootProvider::new_http(self.url.parse().expect("a valid URL"))
    }

    /// Mines `n` empty blocks (`evm_mine`): ganache mines only when a transaction arrives.
    pub async fn mine(&self, n: u64) {
        let provider = self.provider();
        for _ in 0..n {
            let _: String = provider.raw_request(Cow::Borrowed("evm_mine"), ()).await.expect("evm_mine");
        }
    }

    pub async fn block_number(&self) -> u64 {
        self.provider().get_block_number().await.expect("eth_blockNumber")
    }

    /// `(number, hash)` of a block as `eth_getBlockByNumber` reports it, read as plain JSON.
    pub async fn block(&self, number: u64) -> (u64, B256) {
        let block: serde_json::Value = self
            .provider()
            .raw_request(Cow::Borrowed("eth_getBlockByNumber"), (format!("{number:#x}"), false))
            .await
            .expect("eth_getBlockByNumber");
        let number = block["number"].as_str().expect("a block number");
        let number = u64::from_str_radix(number.trim_start_matches("0x"), 16).expect("a hex number");
        (number, block["hash"].as_str().expect("a block hash").parse().expect("a 32-byte hash"))
    }

    /// Sends `tx` from `from`, waits for the receipt, and panics naming `what` unless the transaction
    /// succeeded.
    async fn send(&self, from: &Account, what: &str, tx: TransactionRequest) -> TransactionReceipt {
        let provider = ProviderBuilder::new().wallet(from.signer()).connect_http(self.url.parse().unwrap());
        let receipt = provider
            .send_transaction(tx)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"))
            .get_receipt()
            .await
            .unwrap_or_else(|e| panic!("{what}: no receipt: {e}"));
        assert!(receipt.status(), "{what} reverted: {receipt:?}");
        receipt
    }

    async fn call(&self, from: &Account, what: &str, to: Address, call: impl SolCall) -> TransactionReceipt {
        self.send(from, what, TransactionRequest::default().with_to(to).with_input(call.abi_encode())).await
    }

    async fn deploy(&self, from: &Account, what: &str, code: Bytes, args: Vec<u8>) -> Address {
        let code: Vec<u8> = [code.as_ref(), &args].concat();
        let receipt = self.send(from, what, TransactionRequest::default().with_deploy_code(code)).await;
        receipt.contract_address.unwrap_or_else(|| panic!("{what}: no contract address"))
    }
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free local port");
    listener.local_addr().expect("a bound address").port()
}

/// The token and the MPE deployed on one ganache.
#[derive(Debug)]
pub struct Mpe<'a> {
    ganache: &'a Ganache,
    pub token: Address,
    pub address: Address,
}

impl<'a> Mpe<'a> {
    /// Deploys `SingularityNetToken("SingularityNet Token", "AGIX")` and `MultiPartyEscrow(token)`
    /// from account 0.
    pub async fn deploy(ganache: &'a Ganache) -> Self {
        let deployer = ganache.account(0);
        let token_args = SingularityNetToken::constructorCall {
            name: "SingularityNet Token".into(),
            symbol: "AGIX".into(),
        }
        .abi_encode();
        let token = ganache
            .deploy(deployer, "deploy the token", contract_bytecode("SingularityNetToken"), token_args)
            .await;
        // The MPE's constructor takes one address: one 32-byte word.
        let mpe_args = token.abi_encode();
        let address =
            ganache.deploy(deployer, "deploy the MPE", contract_bytecode("MultiPartyEscrow"), mpe_args).await;
        Self { ganache, token, address }
    }

    pub fn eth_address(&self) -> EthAddress {
        EthAddress(self.address)
    }

    /// Mints `amount` cogs to `account` (as the deployer), lets the MPE take them, and deposits them
    /// into `account`'s MPE balance.
    pub async fn mint_and_deposit(&self, account: &Account, amount: u64) {
        let amount = U256::from(amount);
        let deployer = self.ganache.account(0);
        let mint = SingularityNetToken::mintCall { to: account.address, amount };
        self.ganache.call(deployer, "mint", self.token, mint).await;
        let approve = SingularityNetToken::approveCall { spender: self.address, amount };
        self.ganache.call(account, "approve", self.token, approve).await;
        let deposit = MultiPartyEscrow::depositCall { value: amount };
        self.ganache.call(account, "deposit", self.address, deposit).await;
    }

    /// `openChannel` from `sender`'s MPE balance; the id is the one the `ChannelOpen` log carries.
    pub async fn open_channel(
        &self,
        sender: &Account,
        signer: Address,
        recipient: Address,
        group_id: [u8; 32],
        value: u64,
        expiration: u64,
    ) -> ChannelId {
        let open = MultiPartyEscrow::openChannelCall {
            signer,
            recipient,
            groupId: group_id.into(),
            value: U256::from(value),
            expiration: U256::from(expiration),
        };
        let receipt = self.ganache.call(sender, "openChannel", self.address, open).await;
        let opened = receipt
            .inner
            .logs()
            .iter()
            .filter(|log| log.address() == self.address)
            .find_map(|log| log.log_decode::<MultiPartyEscrow::ChannelOpen>().ok())
            .expect("openChannel logs ChannelOpen");
        ChannelId(opened.inner.data.channelId)
    }

    pub async fn add_funds(&self, sender: &Account, id: ChannelId, amount: u64) {
        let add = MultiPartyEscrow::channelAddFundsCall { channelId: id.0, amount: U256::from(amount) };
        self.ganache.call(sender, "channelAddFunds", self.address, add).await;
    }

    pub async fn extend(&self, sender: &Account, id: ChannelId, new_expiration: u64) {
        let extend = MultiPartyEscrow::channelExtendCall {
            channelId: id.0,
            newExpiration: U256::from(new_expiration),
        };
        self.ganache.call(sender, "channelExtend", self.address, extend).await;
    }

    /// A payment signed the way the clients sign it: personal sign of the keccak of the 135-byte
    /// `__MPE_claim_message` preimage.
    pub fn sign_payment(&self, signer: &Account, id: ChannelId, nonce: u64, amount: u64) -> Signature {
        sign_payment(&self.eth_address(), signer, id, nonce, amount)
    }

    /// `channelClaim` from the recipient; `v` is normalised to 27/28 as snet-cli does.
    pub async fn channel_claim(
        &self,
        recipient: &Account,
        id: ChannelId,
        actual: u64,
        planned: u64,
        signature: &Signature,
        is_sendback: bool,
    ) -> B256 {
        let bytes = normalized(signature).0;
        let claim = MultiPartyEscrow::channelClaimCall {
            channelId: id.0,
            actualAmount: U256::from(actual),
            plannedAmount: U256::from(planned),
            v: bytes[64],
            r: B256::from_slice(&bytes[..32]),
            s: B256::from_slice(&bytes[32..64]),
            isSendback: is_sendback,
        };
        self.ganache.call(recipient, "channelClaim", self.address, claim).await.transaction_hash
    }

    /// `channelClaimTimeout` from the sender: takes the value back once the channel has expired.
    pub async fn claim_timeout(&self, sender: &Account, id: ChannelId) -> B256 {
        let reclaim = MultiPartyEscrow::channelClaimTimeoutCall { channelId: id.0 };
        self.ganache.call(sender, "channelClaimTimeout", self.address, reclaim).await.transaction_hash
    }

    /// `account`'s balance inside the MPE.
    pub async fn balance(&self, account: &Account) -> U256 {
        let call = MultiPartyEscrow::balancesCall { owner: account.address };
        let tx = TransactionRequest::default().with_to(self.address).with_input(call.abi_encode());
        let output = self.ganache.provider().call(tx).await.expect("balances");
        MultiPartyEscrow::balancesCall::abi_decode_returns(&output).expect("a uint256")
    }

    /// The block of the transaction `hash`.
    pub async fn block_of(&self, hash: B256) -> u64 {
        let receipt = self.ganache.provider().get_transaction_receipt(hash).await.expect("receipt");
        receipt.and_then(|r| r.block_number).expect("a mined transaction")
    }
}
