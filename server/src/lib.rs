//! ActiveMirrorOS server library: the pieces of the `activemirror` binary (commands, HTTP API,
//! gRPC services, the shared ingest path and the OTLP mapping), public so tests and tools can
//! use the generated gRPC client and the mapping directly.

pub mod bench;
pub mod cli;
pub mod config;
pub mod grpc;
pub mod http;
pub mod import;
pub mod ingest;
pub mod memory;
pub mod otlp;
pub mod process;
pub mod wire;
