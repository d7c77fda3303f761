// Rebuild when a migration is added: `sqlx::migrate!` embeds the folder at compile time.
// The gRPC code of `src/grpc/proto.rs` is generated from `proto/` with protox, a protobuf compiler in
// Rust, so that a build needs no system `protoc`.
const PROTOS: [&str; 2] = ["proto/state_service.proto", "proto/control_service.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=migrations");
    println!("cargo:rerun-if-changed=proto");
    let descriptors = protox::compile(PROTOS, ["proto"])?;
    tonic_prost_build::configure().build_server(true).build_client(true).compile_fds(descriptors)?;
    Ok(())
}
