//! The messages, servers and clients of package `escrow`, generated at build time from
//! `proto/state_service.proto` and `proto/control_service.proto` (see `build.rs`).

#![allow(clippy::all, clippy::pedantic, missing_docs)]

tonic::include_proto!("escrow");
