//! Signed-message layouts and signer recovery against vectors of the real clients.

use std::collections::BTreeSet;

use serde::Deserialize;

use super::*;

/// The MPE address of the seed's vectors and of the client fixture.
fn mpe() -> EthAddress {
    "0xf25186b5081ff5ce73482ad761db0eb0d25abfbf".parse().unwrap()
}

fn address(text: &str) -> EthAddress {
    text.parse().unwrap()
}

fn bytes(hex_text: &str) -> Vec<u8> {
    hex::decode(hex_text.replace(' ', "")).unwrap()
}

fn word(value: u64) -> String {
    format!("{value:064x}")
}

const SEED_SIGNATURE: &str = "a4d2ae6f3edd1f7fe77e4f6f78ba18d62e6093bcae01ef86d5de902d33662fa3\
                              72011287ea2d8d8436d9db8a366f43480678df25453b484c67f80941ef2c05ef01";
const SEED_SIGNER: &str = "0x77D524c6e0FD652aA9A9bFcAd1d92Fe0781767dF";
const KEY: [u8; 32] = [0x11; 32];
const OTHER_KEY: [u8; 32] = [0x22; 32];

fn seed_payment_message() -> Vec<u8> {
    payment_message(&mpe(), ChannelId::from(1789), Nonce::from(1917), Amount::from(31415))
}

fn with_v(signature: &[u8], v: u8) -> Vec<u8> {
    let mut bytes = signature.to_vec();
    bytes[64] = v;
    bytes
}

// --- escrow.md §4.2: payment ---------------------------------------------------------------

#[test]
fn payment_message_is_tag_mpe_channel_nonce_amount_in_135_bytes() {
    let message = seed_payment_message();

    let expected = format!(
        "5f5f4d50455f636c61696d5f6d657373616765f25186b5081ff5ce73482ad761db0eb0d25abfbf{}{}{}",
        word(0x06fd),
        word(0x077d),
        word(0x7ab7)
    );
    assert_eq!(hex::encode(&message), expected);
    assert_eq!(message.len(), PAYMENT_MESSAGE_LEN);
    assert_eq!(
        keccak256(&message),
        B256::from_slice(&bytes("12b3293fe2ff0a2e5cae00a6461b7a7569623987afae5134eed8021ccbe047d8"))
    );
    assert_eq!(
        personal_digest(&message),
        B256::from_slice(&bytes("a844e6defd97fac28d0662b8d0c985dc2a71006182f01dc94a7195a46f0e262f"))
    );
}

#[test]
fn payment_signed_in_the_seed_suite_recovers_to_the_seed_signer() {
    let signer = recover_signer(&seed_payment_message(), &bytes(SEED_SIGNATURE));

    assert_eq!(signer, Ok(address(SEED_SIGNER)));
}

#[test]
fn payment_for_another_mpe_recovers_to_its_own_signer() {
    let mpe = address("0x39ee715b50e78a920120c1ded58b1a47f571ab75");
    let message = payment_message(&mpe, ChannelId::from(1789), Nonce::from(1917), Amount::from(31415));
    let signature = bytes(
        "de4e998341307b036e460b1cc1593ddefe2e9ea261bd6c3d75967b29b2c3d0a2\
         4969b4a32b099ae2eded90bbc213ad0a159a66af6d55be7e04f724ffa52ce3cc1b",
    );

    assert_eq!(
        recover_signer(&message, &signature),
        Ok(address("0x6b1E951a2F9dE2480C613C1dCDDee4DD4CaE1e4e"))
    );
}

#[test]
fn payment_signature_with_last_byte_0x21_is_incorrect_data() {
    let signature = with_v(&bytes(SEED_SIGNATURE), 0x21);

    let error = recover_signer(&seed_payment_message(), &signature).unwrap_err();

    assert_eq!(error, SignatureError::IncorrectData);
    assert_eq!(error.to_string(), "incorrect signature data");
}

#[test]
fn payment_layout_example_of_the_spec_hashes_to_its_digest() {
    let message = payment_message(&mpe(), ChannelId::from(42), Nonce::from(3), Amount::from(12300));

    assert_eq!(
        keccak256(&message),
        B256::from_slice(&bytes("819b51cca09a9b61b4aca207a793769bb20f42b6907669a41df1cba062c86d4c"))
    );
    assert_eq!(
        personal_digest(&message),
        B256::from_slice(&bytes("b935f68a91ab1d0855398a6d5b22407263359d548d70ae38339e720cb501e1fb"))
    );
}

// --- escrow.md §4.3 and §4.4: state and control requests -----------------------------------

#[test]
fn channel_state_request_for_channel_42_at_block_53_has_the_spec_digest() {
    let message = channel_state_message(&mpe(), ChannelId::from(42), 53);

    assert_eq!(message.len(), 103);
    assert_eq!(
        personal_digest(&message),
        B256::from_slice(&bytes("3bd11a434093f4abe5e4cd4ab2ccf2023ecbb9a32adf238847dcfc2816046618"))
    );
}

#[test]
fn list_unclaimed_request_at_block_100_is_tag_mpe_block_in_68_bytes() {
    let message = list_unclaimed_message(&mpe(), 100);

    let expected =
        format!("5f5f6c6973745f756e636c61696d6564f25186b5081ff5ce73482ad761db0eb0d25abfbf{}", word(100));
    assert_eq!(hex::encode(&message), expected);
    assert_eq!(message.len(), 68);
}

#[test]
fn list_in_progress_request_is_tag_mpe_block_in_70_bytes() {
    let message = list_in_progress_message(&mpe(), 100);

    assert_eq!(&message[..18], b"__list_in_progress");
    assert_eq!(&message[18..38], mpe().as_bytes());
    assert_eq!(hex::encode(&message[38..]), word(100));
    assert_eq!(message.len(), 70);
}

#[test]
fn start_claim_request_for_channel_1_nonce_0_is_tag_mpe_channel_nonce_in_97_bytes() {
    let message = start_claim_message(&mpe(), ChannelId::from(1), Nonce::from(0));

    let expected =
        format!("5f5f73746172745f636c61696df25186b5081ff5ce73482ad761db0eb0d25abfbf{}{}", word(1), word(0));
    assert_eq!(hex::encode(&message), expected);
    assert_eq!(message.len(), 97);
}

#[test]
fn start_claim_for_multiple_channels_signs_the_ids_in_ascending_order() {
    let ids = [ChannelId::from(7), ChannelId::from(2), ChannelId::from(300)];

    let message = start_claim_multiple_message(&mpe(), &ids, 100);

    let expected = format!(
        "{}f25186b5081ff5ce73482ad761db0eb0d25abfbf{}{}{}{}",
        hex::encode("__StartClaimForMultipleChannels_"),
        word(2),
        word(7),
        word(300),
        word(100)
    );
    assert_eq!(hex::encode(&message), expected);
    assert_eq!(message.len(), 52 + 32 * ids.len() + 32);
    assert_eq!(ids, [ChannelId::from(7), ChannelId::from(2), ChannelId::from(300)], "input untouched");
    let reordered = [ChannelId::from(300), ChannelId::from(7), ChannelId::from(2)];
    assert_eq!(start_claim_multiple_message(&mpe(), &reordered, 100), message);
}

#[test]
fn start_claim_for_no_channels_signs_only_the_block() {
    let message = start_claim_multiple_message(&mpe(), &[], 100);

    assert_eq!(message.len(), 84);
    assert_eq!(hex::encode(&message[52..]), word(100));
}

// --- length and v ----------------------------------------------------------------------------

#[test]
fn signature_of_any_length_but_65_is_incorrect_length() {
    let full = bytes(SEED_SIGNATURE);
    let mut long = full.clone();
    long.push(0);

    for signature in [&[][..], &full[..64], &long[..]] {
        let error = recover_signer(&seed_payment_message(), signature).unwrap_err();

        assert_eq!(error, SignatureError::IncorrectLength { length: signature.len() });
        assert_eq!(error.to_string(), "incorrect signature length");
    }
}

#[test]
fn v_as_0_or_1_recovers_the_same_signer_as_27_or_28() {
    let message = seed_payment_message();
    let signature = bytes(SEED_SIGNATURE);
    assert_eq!(signature[64], 1, "the seed's vector carries a bare v");

    for (bare, electrum) in [(0, 27), (1, 28)] {
        assert_eq!(
            recover_signer(&message, &with_v(&signature, bare)),
            recover_signer(&message, &with_v(&signature, electrum)),
            "v = {bare} and v = {electrum}"
        );
    }
    assert_eq!(recover_signer(&message, &with_v(&signature, 28)), Ok(address(SEED_SIGNER)));
}

#[test]
fn v_outside_0_1_27_28_is_incorrect_data_even_where_the_seed_reduces_it_mod_27() {
    let signature = bytes(SEED_SIGNATURE);

    for v in [2, 3, 26, 29, 30, 35, 36, 54, 55, 81, 82, 255] {
        assert_eq!(
            recover_signer(&seed_payment_message(), &with_v(&signature, v)),
            Err(SignatureError::IncorrectData),
            "v = {v}"
        );
    }
}

#[test]
fn signature_with_high_s_recovers_the_same_signer_as_its_low_s_twin() {
    // secp256k1 group order n; (r, n - s, flipped v) is the same signature in the other form.
    let n =
        U256::from_str_radix("fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141", 16).unwrap();
    let message = b"any layout";
    let low = sign(message, &KEY);
    let s = U256::from_be_slice(&low.0[32..64]);
    let mut high = low.0;
    high[32..64].copy_from_slice(&(n - s).to_be_bytes::<32>());
    high[64] = if low.0[64] == 27 { 28 } else { 27 };

    assert_eq!(recover_signer(message, &high), recover_signer(message, low.as_bytes()));
}

#[test]
fn signature_with_r_or_s_zero_or_out_of_range_is_incorrect_data() {
    let message = seed_payment_message();
    let valid = bytes(SEED_SIGNATURE);

    for (range, fill) in [(0..32, 0x00), (32..64, 0x00), (0..32, 0xff), (32..64, 0xff)] {
        let mut signature = valid.clone();
        signature[range].fill(fill);

        assert_eq!(recover_signer(&message, &signature), Err(SignatureError::IncorrectData));
    }
}

#[test]
fn normalized_turns_v_0_1_into_27_28_and_keeps_r_s_and_other_v() {
    let signature = Signature::from_slice(&bytes(SEED_SIGNATURE)).unwrap();
    assert_eq!(signature.0[64], 1);

    let normal = normalized(&signature);

    assert_eq!(normal.0[64], 28);
    assert_eq!(normal.0[..64], signature.0[..64]);
    assert_eq!(normalized(&normal), normal);
    for v in [0, 27, 28, 54] {
        let expected = if v == 0 { 27 } else { v };
        let given = Signature::from_slice(&with_v(&signature.0, v)).unwrap();
        assert_eq!(normalized(&given).0[64], expected, "v = {v}");
    }
}

// --- signing ---------------------------------------------------------------------------------

#[test]
fn message_signed_here_recovers_to_the_signing_key_with_v_27_or_28() {
    let message = seed_payment_message();

    let signature = sign(&message, &KEY);
    let signer = recover_signer(&message, signature.as_bytes()).unwrap();

    assert!(matches!(signature.0[64], 27 | 28));
    assert_eq!(
        signer,
        EthAddress(alloy_primitives::Address::from_private_key(
            &SigningKey::from_bytes((&KEY).into()).unwrap()
        ))
    );
    assert_ne!(signer, recover_signer(&message, sign(&message, &OTHER_KEY).as_bytes()).unwrap());
}

#[test]
fn signature_over_one_layout_does_not_recover_the_signer_over_another() {
    let (channel, nonce, block) = (ChannelId::from(5), Nonce::from(5), 5);
    let messages = [
        payment_message(&mpe(), channel, nonce, Amount::from(5)),
        channel_state_message(&mpe(), channel, block),
        list_unclaimed_message(&mpe(), block),
        list_in_progress_message(&mpe(), block),
        start_claim_message(&mpe(), channel, nonce),
        start_claim_multiple_message(&mpe(), &[channel], block),
    ];
    let signer = recover_signer(&messages[0], sign(&messages[0], &KEY).as_bytes()).unwrap();

    for (i, signed) in messages.iter().enumerate() {
        let signature = sign(signed, &KEY);
        for (j, other) in messages.iter().enumerate() {
            let recovered = recover_signer(other, signature.as_bytes());
            assert_eq!(recovered == Ok(signer), i == j, "signed layout {i}, checked as layout {j}");
        }
    }
}

// --- vectors produced by the real clients (tests/fixtures/signatures) ------------------------

#[derive(Deserialize)]
struct Fixture {
    vectors: Vec<ClientVector>,
}

#[derive(Deserialize)]
struct ClientVector {
    layout: String,
    client: String,
    private_key: String,
    inputs: Inputs,
    message_hex: String,
    message_keccak_hex: String,
    personal_digest_hex: String,
    signature_hex: String,
    signer: EthAddress,
}

#[derive(Deserialize)]
struct Inputs {
    mpe: EthAddress,
    channel_id: Option<ChannelId>,
    nonce: Option<Nonce>,
    amount: Option<Amount>,
    current_block: Option<String>,
}

impl ClientVector {
    /// The message as our layout functions build it from the vector's inputs.
    fn rebuilt_message(&self) -> Vec<u8> {
        let i = &self.inputs;
        let block = || i.current_block.as_deref().unwrap().parse::<u64>().unwrap();
        match self.layout.as_str() {
            "payment" => payment_message(&i.mpe, i.channel_id.unwrap(), i.nonce.unwrap(), i.amount.unwrap()),
            "channel_state" => channel_state_message(&i.mpe, i.channel_id.unwrap(), block()),
            "list_unclaimed" => list_unclaimed_message(&i.mpe, block()),
            "list_in_progress" => list_in_progress_message(&i.mpe, block()),
            "start_claim" => start_claim_message(&i.mpe, i.channel_id.unwrap(), i.nonce.unwrap()),
            other => panic!("unknown layout {other:?} in the client fixture"),
        }
    }

    fn name(&self) -> String {
        format!("{} by {}", self.layout, self.client)
    }
}

fn client_vectors() -> Vec<ClientVector> {
    let text = include_str!("../../../tests/fixtures/signatures/client_vectors.json");
    serde_json::from_str::<Fixture>(text).unwrap().vectors
}

#[test]
fn client_fixture_covers_every_layout_the_clients_sign() {
    let covered: BTreeSet<(String, String)> =
        client_vectors().into_iter().map(|v| (v.layout, v.client)).collect();

    for (layout, client) in [
        ("payment", "snet-sdk 6.0.0"),
        ("payment", "snet-cli 3.1.1"),
        ("channel_state", "snet-sdk 6.0.0"),
        ("channel_state", "snet-cli 3.1.1"),
        ("list_unclaimed", "snet-cli 3.1.1"),
        ("list_in_progress", "snet-cli 3.1.1"),
        ("start_claim", "snet-cli 3.1.1"),
    ] {
        assert!(covered.contains(&(layout.into(), client.into())), "{layout} by {client}");
    }
}

#[test]
fn every_client_message_is_rebuilt_byte_for_byte_by_our_layouts() {
    for vector in client_vectors() {
        let message = vector.rebuilt_message();

        assert_eq!(hex::encode(&message), vector.message_hex, "{}", vector.name());
        assert_eq!(hex::encode(keccak256(&message)), vector.message_keccak_hex, "{}", vector.name());
        assert_eq!(hex::encode(personal_digest(&message)), vector.personal_digest_hex, "{}", vector.name());
    }
}

#[test]
fn every_client_signature_recovers_to_the_client_account() {
    for vector in client_vectors() {
        let signature = bytes(&vector.signature_hex);

        let signer = recover_signer(&vector.rebuilt_message(), &signature);

        assert_eq!(signer, Ok(vector.signer), "{}", vector.name());
    }
}

#[test]
fn our_signatures_equal_the_clients_byte_for_byte() {
    for vector in client_vectors() {
        let key: [u8; 32] = bytes(vector.private_key.trim_start_matches("0x")).try_into().unwrap();

        let signature = sign(&vector.rebuilt_message(), &key);

        assert_eq!(hex::encode(signature.as_bytes()), vector.signature_hex, "{}", vector.name());
    }
}
