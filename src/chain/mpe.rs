//! The MultiPartyEscrow contract's interface, declared here from its function and event
//! signatures (as published in the `snet-contracts` ABI).
//!
//! The ledger only reads: `channels(id)` and the claim events. The functions that change a channel
//! are declared too so that the end-to-end harness drives the real contract through this one
//! declaration of its interface.

// `channelClaim` takes eight arguments on chain; the generated constructor mirrors them.
#![allow(clippy::too_many_arguments)]

alloy::sol! {
    /// SingularityNET's MultiPartyEscrow (MPE).
    interface MultiPartyEscrow {
        /// `channelId` is not indexed here, unlike in the other channel events.
        event ChannelOpen(
            uint256 channelId,
            uint256 nonce,
            address indexed sender,
            address signer,
            address indexed recipient,
            bytes32 indexed groupId,
            uint256 amount,
            uint256 expiration
        );
        event ChannelAddFunds(uint256 indexed channelId, uint256 additionalFunds);
        event ChannelExtend(uint256 indexed channelId, uint256 newExpiration);
        /// The recipient claimed. `nonce` is the channel's nonce after the claim.
        event ChannelClaim(
            uint256 indexed channelId,
            uint256 nonce,
            address indexed recipient,
            uint256 claimAmount,
            uint256 plannedAmount,
            uint256 sendBackAmount,
            uint256 keepAmount
        );
        /// The sender took the channel's value back after expiry.
        event ChannelSenderClaim(uint256 indexed channelId, uint256 nonce, uint256 claimAmount);

        function channels(uint256 channelId) external view returns (
            uint256 nonce,
            address sender,
            address signer,
            address recipient,
            bytes32 groupId,
            uint256 value,
            uint256 expiration
        );
        function nextChannelId() external view returns (uint256);
        /// The ERC-20 token channels are funded in (fixed when the contract is deployed).
        function token() external view returns (address);
        function balances(address owner) external view returns (uint256);

        function deposit(uint256 value) external returns (bool);
        function openChannel(
            address signer,
            address recipient,
            bytes32 groupId,
            uint256 value,
            uint256 expiration
        ) external returns (bool);
        function channelAddFunds(uint256 channelId, uint256 amount) external returns (bool);
        function channelExtend(uint256 channelId, uint256 newExpiration) external returns (bool);
        function channelClaim(
            uint256 channelId,
            uint256 actualAmount,
            uint256 plannedAmount,
            uint8 v,
            bytes32 r,
            bytes32 s,
            bool isSendback
        ) external;
        function channelClaimTimeout(uint256 channelId) external;
    }
}

alloy::sol! {
    /// The one call of ERC-20 the ledger reads: how many decimals a token has (cogs per token).
    interface Erc20 {
        function decimals() external view returns (uint8);
    }
}

#[cfg(test)]
mod tests {
    use alloy::primitives::{U256, hex};
    use alloy::sol_types::{SolCall, SolEvent};

    use super::MultiPartyEscrow::*;

    #[test]
    fn the_channels_getter_is_called_as_the_daemon_calls_it() {
        // escrow.md §7: selector e5949b5d, then the id as one 32-byte word.
        let calldata = channelsCall { channelId: U256::from(42) }.abi_encode();
        assert_eq!(hex::encode(&calldata[..4]), "e5949b5d");
        assert_eq!(calldata.len(), 4 + 32);
        assert_eq!(U256::from_be_slice(&calldata[4..]), U256::from(42));
    }

    #[test]
    fn event_signatures_are_the_contracts() {
        assert_eq!(
            ChannelClaim::SIGNATURE,
            "ChannelClaim(uint256,uint256,address,uint256,uint256,uint256,uint256)"
        );
        assert_eq!(ChannelSenderClaim::SIGNATURE, "ChannelSenderClaim(uint256,uint256,uint256)");
        assert_eq!(
            ChannelOpen::SIGNATURE,
            "ChannelOpen(uint256,uint256,address,address,address,bytes32,uint256,uint256)"
        );
    }
}
