//! The one write path every protocol shares (HTTP JSON, gRPC `activemirror.v1.Ingest`,
//! OTLP/gRPC, OTLP/HTTP): append a validated batch to the engine off the async runtime, count
//! it per protocol, and turn engine errors into one typed outcome each protocol renders.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use engine::{Engine, EngineError};
use segments::Event;

/// Holds a batch to the tenant its request names (`x-tenant` header or gRPC metadata), as
/// OTLP requests are held: an event without a tenant of its own (read as `default`) gets the
/// request's, and an event naming another tenant rejects the batch, so a writer scoped to one
/// tenant cannot write into another. Without a request tenant the events are left as they are.
pub fn scope_to_tenant(events: &mut [Event], tenant: Option<&str>) -> Result<(), engine::ValidationError> {
    let Some(tenant) = tenant else { return Ok(()) };
    for (index, e) in events.iter_mut().enumerate() {
        if e.tenant == "default" {
            tenant.clone_into(&mut e.tenant);
        } else if e.tenant != tenant {
            return Err(engine::ValidationError {
                index,
                field: "tenant".into(),
                message: format!("`{}` is not the request's tenant `{tenant}` (x-tenant)", e.tenant),
            });
        }
    }
    Ok(())
}

/// The ingest protocols, as the `protocol` label of the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http,
    Grpc,
    OtlpGrpc,
    OtlpHttp,
}

impl Protocol {
    pub const ALL: [Protocol; 4] = [Protocol::Http, Protocol::Grpc, Protocol::OtlpGrpc, Protocol::OtlpHttp];

    pub fn label(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Grpc => "grpc",
            Protocol::OtlpGrpc => "otlp_grpc",
            Protocol::OtlpHttp => "otlp_http",
        }
    }
}

/// Per-protocol ingest counters.
#[derive(Default)]
pub struct ProtocolCounters {
    pub events: AtomicU64,
    pub batches: AtomicU64,
    pub bytes: AtomicU64,
}

/// Counters of accepted and rejected ingest.
#[derive(Default)]
pub struct IngestMetrics {
    pub by_protocol: [ProtocolCounters; 4],
    pub rejected_invalid: AtomicU64,
    pub rejected_backpressure: AtomicU64,
    pub rejected_too_large: AtomicU64,
}

impl IngestMetrics {
    pub fn of(&self, p: Protocol) -> &ProtocolCounters {
        &self.by_protocol[p as usize]
    }

    pub fn received(&self, p: Protocol, bytes: usize) {
        self.of(p).bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub fn invalid(&self) {
        self.rejected_invalid.fetch_add(1, Ordering::Relaxed);
    }
}

/// Why a batch was not stored.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The engine's buffer stayed full for its whole backpressure wait; nothing was stored.
    #[error(
        "ingest buffer full ({buffered} of {limit} bytes buffered); nothing of this batch was stored, retry later"
    )]
    Backpressure { buffered: usize, limit: usize },
    #[error("{0}")]
    Engine(EngineError),
    #[error("ingest task failed: {0}")]
    Task(String),
}

/// Appends `events` and returns once they are durable. Empty batches are accepted as no-ops.
pub async fn store(
    engine: &Arc<Engine>,
    metrics: &IngestMetrics,
    protocol: Protocol,
    events: Vec<Event>,
) -> Result<usize, StoreError> {
    let n = events.len();
    if n == 0 {
        return Ok(0);
    }
    let engine = engine.clone();
    match tokio::task::spawn_blocking(move || engine.append(events)).await {
        Ok(Ok(_)) => {
            let c = metrics.of(protocol);
            c.events.fetch_add(n as u64, Ordering::Relaxed);
            c.batches.fetch_add(1, Ordering::Relaxed);
            Ok(n)
        }
        Ok(Err(EngineError::Backpressure { buffered, limit })) => {
            metrics.rejected_backpressure.fetch_add(1, Ordering::Relaxed);
            Err(StoreError::Backpressure { buffered, limit })
        }
        Ok(Err(e)) => Err(StoreError::Engine(e)),
        Err(e) => Err(StoreError::Task(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(tenant: &str) -> Event {
        Event { tenant: tenant.to_owned(), ..Event::default() }
    }

    #[test]
    fn a_request_tenant_fills_the_default_and_refuses_others() {
        let mut events = vec![event("default"), event("acme")];
        scope_to_tenant(&mut events, Some("acme")).expect("same tenant");
        assert_eq!(events.iter().map(|e| e.tenant.as_str()).collect::<Vec<_>>(), ["acme", "acme"]);
        let mut events = vec![event("acme"), event("default"), event("globex")];
        let err = scope_to_tenant(&mut events, Some("acme")).expect_err("another tenant");
        assert_eq!((err.index, err.field.as_str()), (2, "tenant"));
        assert!(err.message.contains("globex") && err.message.contains("acme"), "{err}");
        let mut events = vec![event("default"), event("globex")];
        scope_to_tenant(&mut events, None).expect("no request tenant");
        assert_eq!(events.iter().map(|e| e.tenant.as_str()).collect::<Vec<_>>(), ["default", "globex"]);
    }
}
