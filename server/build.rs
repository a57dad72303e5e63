//! Generates the `activemirror.v1` gRPC code from `proto/` with protox (pure Rust), so no
//! system `protoc` is needed.
//!
//! Two passes over the same file: the messages and the client as they are
//! (`OUT_DIR/activemirror.v1.rs`), and the server (`OUT_DIR/raw/activemirror.v1.rs`), whose
//! `EventBatch` is `crate::wire::RawEventBatch`, the events left as received for
//! `wire::event_input` to read without allocating.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(["activemirror/v1/ingest.proto"], ["proto"])?;
    tonic_prost_build::configure().btree_map(".").build_client(true).build_server(false).compile_fds(fds.clone())?;
    let raw = std::path::PathBuf::from(std::env::var("OUT_DIR")?).join("raw");
    std::fs::create_dir_all(&raw)?;
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(true)
        .extern_path(".activemirror.v1", "crate::grpc::pb")
        .extern_path(".activemirror.v1.EventBatch", "crate::wire::RawEventBatch")
        .out_dir(&raw)
        .compile_fds(fds)?;
    Ok(())
}
