//! The pure core: no I/O, no clocks, no database. Everything here is unit-tested in place.

pub mod bundle;
pub mod channel;
pub mod event;
pub mod fold;
pub mod headers;
pub mod payment;
pub mod signature;
pub mod types;

pub use channel::{ChannelState, OnChainChannel, PaymentChannelData, PaymentChannelKey};
pub use event::{ChainBlock, ChannelEvent, ClaimOutcome, Event, KvEvent, LeaseEvent, StreamId};
pub use fold::{ChannelProjection, Claim, FoldError};
pub use types::{Amount, BlockNumber, ChannelId, EthAddress, GroupId, Nonce, ParseError, Signature};
