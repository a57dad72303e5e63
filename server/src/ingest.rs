//! The one write path every protocol shares (HTTP JSON, gRPC `activemirror.v1.Ingest`,
//! OTLP/gRPC, OTLP/HTTP): decode, validate and append a batch off the async workers, count it
//! per protocol, and turn decode and engine errors into one typed outcome each protocol
//! renders.
//! Also the admission gate ([`IngestGate`]) that bounds the request bytes all protocols
//! together hold while their batches are decoded, validated and appended.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

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
            e.tenant = tenant.into();
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
    /// Requests refused because ingest requests in flight held the whole
    /// [`IngestGate`] budget for the whole wait.
    pub rejected_inflight: AtomicU64,
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
    /// Requests in flight held the [`IngestGate`]'s whole budget for its whole wait; nothing
    /// of this request was decoded or stored.
    #[error(
        "ingest requests in flight hold {held} of {limit} bytes (server.max_inflight_mb); nothing of this batch was stored, retry later"
    )]
    InFlight { held: u64, limit: u64 },
    /// The request did not decode or an event did not validate (the message names the event
    /// and the field); nothing of it was stored.
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Engine(EngineError),
    #[error("ingest task failed: {0}")]
    Task(String),
}

/// Decodes and validates a request's batch with `decode`, then appends it, both on one of the
/// runtime's blocking threads, and returns once the batch is durable. Decoding a large body
/// (a 64 MB JSON body takes about a second) on an async worker would stall every other
/// request that worker serves. A `decode` error is [`StoreError::Invalid`] (counted as
/// invalid); an empty batch is accepted as a no-op.
pub async fn decode_and_store<F, E>(
    engine: &Arc<Engine>,
    metrics: &IngestMetrics,
    protocol: Protocol,
    decode: F,
) -> Result<usize, StoreError>
where
    F: FnOnce() -> Result<Vec<Event>, E> + Send + 'static,
    E: std::fmt::Display,
{
    let engine = engine.clone();
    let work = move || {
        let events = decode().map_err(|e| StoreError::Invalid(e.to_string()))?;
        let n = events.len();
        if n > 0 {
            engine.append(events).map_err(|e| match e {
                EngineError::Backpressure { buffered, limit } => StoreError::Backpressure { buffered, limit },
                other => StoreError::Engine(other),
            })?;
        }
        Ok(n)
    };
    let outcome = tokio::task::spawn_blocking(work).await.unwrap_or_else(|e| Err(StoreError::Task(e.to_string())));
    match &outcome {
        Ok(0) => {}
        Ok(n) => {
            let c = metrics.of(protocol);
            c.events.fetch_add(*n as u64, Ordering::Relaxed);
            c.batches.fetch_add(1, Ordering::Relaxed);
        }
        Err(StoreError::Invalid(_)) => metrics.invalid(),
        Err(StoreError::Backpressure { .. }) => {
            metrics.rejected_backpressure.fetch_add(1, Ordering::Relaxed);
        }
        Err(_) => {}
    }
    outcome
}

/// Bounds the bytes of ingest requests being decoded, validated and appended at once, over
/// all protocols and connections together. A request is admitted for its size (as received,
/// and again as decompressed) before it is decoded; while the budget is taken it waits, in
/// arrival order and without holding a thread, at most the gate's `wait`, and is then
/// refused ([`StoreError::InFlight`]: 429 / `RESOURCE_EXHAUSTED`). A request larger than the
/// whole budget is admitted once it has the budget to itself. The permits count KiB.
pub struct IngestGate {
    permits: Arc<Semaphore>,
    limit_kib: u32,
    wait: Duration,
}

/// What one request holds of an [`IngestGate`]'s budget; given back when dropped.
#[derive(Default)]
pub struct Admission {
    permit: Option<OwnedSemaphorePermit>,
}

impl Admission {
    /// Bytes of the budget held.
    pub fn bytes(&self) -> u64 {
        self.permit.as_ref().map_or(0, |p| (p.num_permits() as u64) << 10)
    }
}

impl IngestGate {
    /// A gate of `limit_bytes` (at least 1 KiB, at most 4 TiB) whose requests wait at most
    /// `wait` for room.
    pub fn new(limit_bytes: u64, wait: Duration) -> IngestGate {
        let limit_kib = (limit_bytes >> 10).clamp(1, u64::from(u32::MAX)) as u32;
        IngestGate { permits: Arc::new(Semaphore::new(limit_kib as usize)), limit_kib, wait }
    }

    /// The budget, in bytes.
    pub fn limit(&self) -> u64 {
        u64::from(self.limit_kib) << 10
    }

    /// Bytes of the budget held by requests now.
    pub fn held(&self) -> u64 {
        u64::from(self.limit_kib).saturating_sub(self.permits.available_permits() as u64) << 10
    }

    /// Grows what `admission` holds to `bytes` (rounded up to KiB, capped at the whole budget),
    /// waiting for room at most the gate's `wait`; on timeout `admission` keeps what it held
    /// and the request is to be refused.
    pub async fn admit(
        &self,
        admission: &mut Admission,
        bytes: usize,
        metrics: &IngestMetrics,
    ) -> Result<(), StoreError> {
        let want = (bytes as u64).div_ceil(1024).min(u64::from(self.limit_kib)) as u32;
        let held = admission.permit.as_ref().map_or(0, |p| p.num_permits() as u32);
        if want <= held {
            return Ok(());
        }
        let acquire = self.permits.clone().acquire_many_owned(want - held);
        match tokio::time::timeout(self.wait, acquire).await {
            Ok(Ok(more)) => {
                match &mut admission.permit {
                    Some(p) => p.merge(more),
                    None => admission.permit = Some(more),
                }
                Ok(())
            }
            // The semaphore is never closed; a timeout is the one way here.
            Ok(Err(_)) | Err(_) => {
                metrics.rejected_inflight.fetch_add(1, Ordering::Relaxed);
                Err(StoreError::InFlight { held: self.held(), limit: self.limit() })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn batches_are_decoded_and_stored_off_the_workers_and_bad_ones_store_nothing() {
        let dir = tempfile::tempdir().expect("tmp");
        let (engine, _) = Engine::open(dir.path(), engine::EngineConfig::default()).expect("open");
        let engine = Arc::new(engine);
        let m = IngestMetrics::default();
        let body = r#"{"trace_id":"0af7651916cd43dd8448eb211c80319c","span_id":"b7ad6b7169203331","agent_id":"a","timestamp_ns":1,"kind":"thought"}"#;
        let worker = std::thread::current().id();
        let decode = move || {
            assert_ne!(std::thread::current().id(), worker, "decoded on a blocking thread");
            engine::parse_body(body)
        };
        assert_eq!(decode_and_store(&engine, &m, Protocol::Http, decode).await.expect("stored"), 1);
        let bad = || engine::parse_body(r#"{"trace_id":"xyz"}"#);
        let err = decode_and_store(&engine, &m, Protocol::Http, bad).await.expect_err("invalid");
        assert!(matches!(&err, StoreError::Invalid(msg) if msg.contains("trace_id")), "{err}");
        let empty = || Ok::<_, String>(Vec::new());
        assert_eq!(decode_and_store(&engine, &m, Protocol::Grpc, empty).await.expect("no-op"), 0);
        let c = m.of(Protocol::Http);
        assert_eq!((c.events.load(Ordering::Relaxed), c.batches.load(Ordering::Relaxed)), (1, 1));
        assert_eq!(m.of(Protocol::Grpc).batches.load(Ordering::Relaxed), 0, "an empty batch is not counted");
        assert_eq!(m.rejected_invalid.load(Ordering::Relaxed), 1);
        assert_eq!(engine.snapshot().memory.iter().map(|b| b.len()).sum::<usize>(), 1, "only the valid event");
    }

    #[tokio::test]
    async fn the_gate_admits_up_to_its_budget_then_waits_then_refuses() {
        const WAIT: Duration = Duration::from_millis(200);
        let m = IngestMetrics::default();
        let gate = IngestGate::new(100 << 10, WAIT);
        let mut a = Admission::default();
        gate.admit(&mut a, 60 << 10, &m).await.expect("room");
        assert_eq!((a.bytes(), gate.held()), (60 << 10, 60 << 10));
        // Growing to what is held already takes nothing more; 1 byte rounds up to 1 KiB.
        gate.admit(&mut a, 1000, &m).await.expect("held");
        let mut b = Admission::default();
        gate.admit(&mut b, 1, &m).await.expect("room");
        assert_eq!(gate.held(), 61 << 10);
        // 50 KiB more does not fit: refused after the wait, holding only what it had.
        let started = std::time::Instant::now();
        let err = gate.admit(&mut b, 51 << 10, &m).await.expect_err("full");
        assert!(started.elapsed() >= WAIT, "refused only after the wait");
        assert!(matches!(err, StoreError::InFlight { held, limit } if held == 61 << 10 && limit == 100 << 10), "{err}");
        assert!(err.to_string().contains("server.max_inflight_mb"), "{err}");
        assert_eq!((b.bytes(), m.rejected_inflight.load(Ordering::Relaxed)), (1 << 10, 1));
        // Dropping an admission gives its bytes back, and a waiter gets them.
        let waiter = async {
            let mut c = Admission::default();
            gate.admit(&mut c, 90 << 10, &m).await.map(|()| c.bytes())
        };
        let release = async {
            tokio::time::sleep(WAIT / 4).await;
            drop(a);
        };
        let (got, ()) = tokio::join!(waiter, release);
        assert_eq!(got.expect("admitted once room was given back"), 90 << 10);
        // A request larger than the budget is admitted for the whole budget, once it is free.
        drop(b);
        let mut big = Admission::default();
        gate.admit(&mut big, 10 << 20, &m).await.expect("alone");
        assert_eq!((big.bytes(), gate.held()), (100 << 10, 100 << 10));
        drop(big);
        assert_eq!(gate.held(), 0);
    }

    fn event(tenant: &str) -> Event {
        Event { tenant: tenant.into(), ..Event::default() }
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
