//! The commands finance and operations run beside `serve`, one file each (parse and apply), kept
//! out of `cli` so that the command line only dispatches:
//! - [`bundle`]: `mpe-ledger bundle --channel N`, one channel's offline audit bundle;
//! - [`verify_bundle`]: `mpe-ledger verify-bundle FILE [--head HASH]`, its check, with no database;
//! - [`claims_due`]: `mpe-ledger claims due [--within BLOCKS]`, the channels to claim before their
//!   expiration, as a listing a cron job can act on;
//! - [`reader_add`]: `mpe-ledger reader add NAME`, a login that sees only the `reporting` views.

pub mod bundle;
pub mod claims_due;
pub mod reader_add;
pub mod verify_bundle;
