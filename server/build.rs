//! Generates the `activemirror.v1` gRPC code from `proto/` with protox (pure Rust), so no
//! system `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(["activemirror/v1/ingest.proto"], ["proto"])?;
    tonic_prost_build::configure().btree_map(".").build_client(true).build_server(true).compile_fds(fds)?;
    Ok(())
}
