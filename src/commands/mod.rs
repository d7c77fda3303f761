//! The commands finance and operations run beside `serve`, one file each (parse and apply), kept
//! out of `cli` so that the command line only dispatches:
//! - [`claims_due`]: `mpe-ledger claims due [--within BLOCKS]`, the channels to claim before their
//!   expiration, as a listing a cron job can act on;
//! - [`reader_add`]: `mpe-ledger reader add NAME`, a login that sees only the `reporting` views.

pub mod claims_due;
pub mod reader_add;
