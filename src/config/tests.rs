//! The settings' validation: every key, its default, and the one-line error naming it.

use super::*;

const MPE: &str = "0x5b1869D9A4C187F2EAa108f3062412ecf0526b24";
const PAYEE: &str = "0x22d491Bde2303f2f43325b2108D26f1eAbA1e32b";

fn full() -> RawSettings {
    toml::from_str(&format!(
        r#"
        ethereum_rpc_url = "http://127.0.0.1:8545"
        mpe_address = "{MPE}"
        group_id = "ewAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
        payment_address = "{PAYEE}"
        price = 10
        upstream = "http://127.0.0.1:50051"
        "#
    ))
    .unwrap()
}

#[test]
fn no_settings_run_without_a_chain() {
    let config = RawSettings::default().validate().unwrap();
    assert_eq!(config.chain, None);
    assert_eq!(config.listen, DEFAULT_LISTEN.parse().unwrap());
    assert_eq!(config.max_message_bytes, DEFAULT_MAX_MESSAGE_BYTES);
    assert_eq!(config.max_call_duration, Duration::from_secs(DEFAULT_MAX_CALL_SECONDS));
    assert_eq!(config.max_concurrent_calls, DEFAULT_MAX_CONCURRENT_CALLS);
    assert_eq!(config.max_connections, DEFAULT_MAX_CONNECTIONS);
    assert_eq!(config.tls, None);
}

#[test]
fn a_full_file_validates() {
    let chain = full().validate().unwrap().chain.unwrap();
    assert_eq!(chain.pricing, Pricing::Fixed(Amount::from(10)));
    assert_eq!(chain.group_id.0[0], 123);
    assert_eq!(chain.expiration_threshold, DEFAULT_EXPIRATION_THRESHOLD);
    assert_eq!(chain.mpe_address.to_string(), MPE);
    assert_eq!(chain.average_block_time_ms, DEFAULT_AVERAGE_BLOCK_TIME_MS);
    // Due by default from where payments are refused: the channel can earn nothing more.
    assert_eq!(chain.claims_due_within_blocks, DEFAULT_EXPIRATION_THRESHOLD);
}

#[test]
fn environment_variables_override_the_file() {
    let env = |key: &str| match key {
        "MPE_LEDGER_PRICE" => Some("25".to_owned()),
        "MPE_LEDGER_LISTEN" => Some("127.0.0.1:9999".to_owned()),
        _ => None,
    };
    let config = full().with_env(env).validate().unwrap();
    assert_eq!(config.chain.unwrap().pricing, Pricing::Fixed(Amount::from(25)));
    assert_eq!(config.listen.port(), 9999);
}

#[test]
fn a_partial_chain_configuration_names_the_missing_setting() {
    let partial = RawSettings { upstream: None, ..full() };
    assert_eq!(
        partial.validate().unwrap_err().to_string(),
        "invalid setting upstream: missing (the chain settings are all required together)"
    );
}

#[test]
fn each_bad_value_names_its_setting() {
    let cases: Vec<(RawSettings, &str)> = vec![
        (RawSettings { mpe_address: Some("0x12".into()), ..full() }, "mpe_address"),
        (RawSettings { payment_address: Some("nope".into()), ..full() }, "payment_address"),
        (RawSettings { group_id: Some("AAAA".into()), ..full() }, "group_id"),
        (RawSettings { price: Some(toml::Value::Integer(-1)), ..full() }, "price"),
        (RawSettings { price: Some(toml::Value::String("042".into())), ..full() }, "price"),
        (RawSettings { ethereum_rpc_url: Some("localhost:8545".into()), ..full() }, "ethereum_rpc_url"),
        (RawSettings { ethereum_rpc_url: Some("ws://127.0.0.1:8546".into()), ..full() }, "ethereum_rpc_url"),
        (RawSettings { upstream: Some("grpc://127.0.0.1:1".into()), ..full() }, "upstream"),
        (RawSettings { ethereum_rpc_ca_file: Some("ca.pem".into()), ..full() }, "ethereum_rpc_ca_file"),
        (RawSettings { upstream_ca_file: Some("ca.pem".into()), ..full() }, "upstream_ca_file"),
        (RawSettings { tls_cert_file: Some("".into()), ..tls(full()) }, "tls_cert_file"),
        (RawSettings { max_connections: Some(toml::Value::Integer(0)), ..full() }, "max_connections"),
        (RawSettings { max_connections: Some(toml::Value::Integer(1 << 21)), ..full() }, "max_connections"),
        (RawSettings { listen: Some("7000".into()), ..full() }, "listen"),
        (
            RawSettings { average_block_time_ms: Some(toml::Value::Integer(0)), ..full() },
            "average_block_time_ms",
        ),
        (
            RawSettings { average_block_time_ms: Some(toml::Value::String("12.5".into())), ..full() },
            "average_block_time_ms",
        ),
        (
            RawSettings {
                claims_due_within_blocks: Some(toml::Value::String(u64::MAX.to_string())),
                ..full()
            },
            "claims_due_within_blocks",
        ),
        (RawSettings { lease_ttl_seconds: Some(toml::Value::Integer(0)), ..full() }, "lease_ttl_seconds"),
        (RawSettings { max_call_seconds: Some(toml::Value::Integer(0)), ..full() }, "max_call_seconds"),
        (RawSettings { max_call_seconds: Some(toml::Value::Integer(86_401)), ..full() }, "max_call_seconds"),
        (
            RawSettings { max_concurrent_calls: Some(toml::Value::Integer(0)), ..full() },
            "max_concurrent_calls",
        ),
        (
            RawSettings { max_concurrent_calls: Some(toml::Value::String("many".into())), ..full() },
            "max_concurrent_calls",
        ),
    ];
    for (raw, key) in cases {
        let error = raw.validate().unwrap_err();
        assert_eq!(error.key, key, "{error}");
    }
}

fn tls(raw: RawSettings) -> RawSettings {
    RawSettings {
        tls_cert_file: Some("/etc/mpe-ledger/tls/cert.pem".into()),
        tls_key_file: Some("/etc/mpe-ledger/tls/key.pem".into()),
        ..raw
    }
}

#[test]
fn https_urls_are_accepted_with_their_ca_files() {
    let raw = RawSettings {
        ethereum_rpc_url: Some("https://mainnet.example/v3/key".into()),
        ethereum_rpc_ca_file: Some("/etc/ssl/node-ca.pem".into()),
        upstream: Some("https://service.example:50051".into()),
        upstream_ca_file: Some("/etc/ssl/service-ca.pem".into()),
        ..full()
    };
    let chain = raw.validate().unwrap().chain.unwrap();
    assert_eq!(chain.rpc_ca_file, Some(PathBuf::from("/etc/ssl/node-ca.pem")));
    assert_eq!(chain.upstream_ca_file, Some(PathBuf::from("/etc/ssl/service-ca.pem")));
    let plain = full().validate().unwrap().chain.unwrap();
    assert_eq!((plain.rpc_ca_file, plain.upstream_ca_file), (None, None));
}

#[test]
fn a_refused_url_is_not_repeated_in_the_error() {
    let raw = RawSettings { ethereum_rpc_url: Some("wss://node.example/v3/secret-key".into()), ..full() };
    let error = raw.validate().unwrap_err().to_string();
    assert_eq!(error, r#"invalid setting ethereum_rpc_url: scheme "wss" is not http or https"#);
}

#[test]
fn a_ca_file_without_its_url_names_the_ca_setting() {
    let raw = RawSettings { ethereum_rpc_ca_file: Some("ca.pem".into()), ..RawSettings::default() };
    assert_eq!(
        raw.validate().unwrap_err().to_string(),
        "invalid setting ethereum_rpc_ca_file: only used with an https:// ethereum_rpc_url, which is not given"
    );
    let raw = RawSettings { upstream_ca_file: Some("ca.pem".into()), ..full() };
    assert_eq!(
        raw.validate().unwrap_err().to_string(),
        "invalid setting upstream_ca_file: only used with an https:// upstream, which is http://"
    );
}

#[test]
fn tls_needs_both_files_and_names_the_missing_one() {
    let files = tls(RawSettings::default()).validate().unwrap().tls.unwrap();
    assert_eq!(files.cert_file, PathBuf::from("/etc/mpe-ledger/tls/cert.pem"));
    assert_eq!(files.key_file, PathBuf::from("/etc/mpe-ledger/tls/key.pem"));
    assert_eq!(RawSettings::default().validate().unwrap().tls, None);
    let only_cert = RawSettings { tls_key_file: None, ..tls(RawSettings::default()) };
    assert_eq!(
        only_cert.validate().unwrap_err().to_string(),
        "invalid setting tls_key_file: missing (tls_cert_file is given: TLS needs both)"
    );
    let only_key = RawSettings { tls_cert_file: None, ..tls(RawSettings::default()) };
    assert_eq!(
        only_key.validate().unwrap_err().to_string(),
        "invalid setting tls_cert_file: missing (tls_key_file is given: TLS needs both)"
    );
}

#[test]
fn tls_and_ca_settings_come_from_the_environment_too() {
    let env = |key: &str| match key {
        "MPE_LEDGER_TLS_CERT_FILE" => Some("/run/tls/cert.pem".to_owned()),
        "MPE_LEDGER_TLS_KEY_FILE" => Some("/run/tls/key.pem".to_owned()),
        "MPE_LEDGER_MAX_CONNECTIONS" => Some("100".to_owned()),
        "MPE_LEDGER_ETHEREUM_RPC_URL" => Some("https://node.example".to_owned()),
        "MPE_LEDGER_ETHEREUM_RPC_CA_FILE" => Some("/run/tls/node-ca.pem".to_owned()),
        "MPE_LEDGER_UPSTREAM" => Some("https://127.0.0.1:50051".to_owned()),
        "MPE_LEDGER_UPSTREAM_CA_FILE" => Some("/run/tls/service-ca.pem".to_owned()),
        _ => None,
    };
    let config = full().with_env(env).validate().unwrap();
    assert_eq!(config.tls.unwrap().key_file, PathBuf::from("/run/tls/key.pem"));
    assert_eq!(config.max_connections, 100);
    let chain = config.chain.unwrap();
    assert_eq!(chain.rpc_ca_file, Some(PathBuf::from("/run/tls/node-ca.pem")));
    assert_eq!(chain.upstream_ca_file, Some(PathBuf::from("/run/tls/service-ca.pem")));
}

#[test]
fn per_method_prices_need_full_method_names() {
    let mut raw = RawSettings { price: None, ..full() };
    raw.prices = Some([("/example.Calculator/add".to_owned(), toml::Value::Integer(7))].into());
    let chain = raw.clone().validate().unwrap().chain.unwrap();
    assert_eq!(chain.pricing.price("/example.Calculator/add"), Ok(Amount::from(7)));
    raw.prices = Some([("add".to_owned(), toml::Value::Integer(7))].into());
    assert_eq!(raw.validate().unwrap_err().key, "prices");
}

#[test]
fn group_ids_are_accepted_as_base64_or_hex() {
    let hex = format!("0x{}", "7b".to_owned() + &"00".repeat(31));
    assert_eq!(
        group_id_setting(&hex).unwrap(),
        group_id_setting("ewAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=").unwrap()
    );
}

#[test]
fn unknown_keys_in_the_file_are_refused() {
    assert!(toml::from_str::<RawSettings>("prise = 10").is_err());
}
