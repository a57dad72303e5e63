//! The gRPC port (tonic): `activemirror.v1.Ingest` (our protocol, `proto/activemirror/v1/`)
//! and OpenTelemetry's `TraceService/Export` (OTLP/gRPC), both on the one listener.
//! Acks are sent only after the engine reports the batch durable.

use std::borrow::Cow;
use std::sync::Arc;

use engine::{Engine, EventInput};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use segments::Event;
use tonic::{Request, Response, Status, Streaming};

use crate::ingest::{self, IngestMetrics, Protocol, StoreError};
use crate::otlp;

/// Code generated from `proto/activemirror/v1/ingest.proto` by `build.rs`.
pub mod pb {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    tonic::include_proto!("activemirror.v1");
}

use pb::ingest_server::{Ingest, IngestServer};
use pb::{EventBatch, WriteAck};

/// State the gRPC services share with the HTTP API.
#[derive(Clone)]
pub struct GrpcState {
    pub engine: Arc<Engine>,
    pub metrics: Arc<IngestMetrics>,
}

/// Field values of one protobuf event in the validator's input shape. proto3 cannot tell an
/// empty string from a missing one, so empty strings of non-optional fields count as absent.
pub fn event_input(e: pb::Event) -> EventInput<'static> {
    let s = |v: String| (!v.is_empty()).then_some(Cow::Owned(v));
    EventInput {
        tenant: s(e.tenant),
        trace_id: s(e.trace_id),
        span_id: s(e.span_id),
        parent_span_id: e.parent_span_id.map(Cow::Owned),
        agent_id: s(e.agent_id),
        session_id: e.session_id.map(Cow::Owned),
        timestamp: e.timestamp.map(Cow::Owned),
        timestamp_ns: e.timestamp_ns,
        kind: s(e.kind),
        name: e.name.map(Cow::Owned),
        content: e.content.map(Cow::Owned),
        intent: e.intent.map(Cow::Owned),
        confidence: e.confidence,
        duration_ms: e.duration_ms,
        status: e.status.map(Cow::Owned),
        error_message: e.error_message.map(Cow::Owned),
        model: e.model.map(Cow::Owned),
        input_tokens: e.input_tokens,
        output_tokens: e.output_tokens,
        cost_usd: e.cost_usd,
        attributes: (!e.attributes.is_empty()).then_some(e.attributes),
    }
}

/// The protobuf form of a stored event (used by clients such as `activemirror bench ingest`).
pub fn event_to_pb(e: &Event) -> pb::Event {
    pb::Event {
        tenant: e.tenant.clone(),
        trace_id: engine::validate::hex(&e.trace_id),
        span_id: engine::validate::hex(&e.span_id),
        parent_span_id: e.parent_span_id.map(|p| engine::validate::hex(&p)),
        agent_id: e.agent_id.clone(),
        session_id: e.session_id.clone(),
        timestamp: None,
        timestamp_ns: Some(e.timestamp_ns),
        kind: e.kind.clone(),
        name: e.name.clone(),
        content: e.content.clone(),
        intent: e.intent.clone(),
        confidence: e.confidence,
        duration_ms: e.duration_ms,
        status: Some(e.status.clone()),
        error_message: e.error_message.clone(),
        model: e.model.clone(),
        input_tokens: e.input_tokens,
        output_tokens: e.output_tokens,
        cost_usd: e.cost_usd,
        attributes: e.attributes.iter().cloned().collect(),
    }
}

/// Validates a whole batch; the first bad event rejects it.
pub fn validate_batch(batch: EventBatch) -> Result<Vec<Event>, engine::ValidationError> {
    batch.events.into_iter().enumerate().map(|(i, e)| engine::validate_input(event_input(e), i)).collect()
}

fn store_status(e: StoreError) -> Status {
    match e {
        StoreError::Backpressure { .. } => Status::resource_exhausted(e.to_string()),
        other => Status::internal(other.to_string()),
    }
}

impl GrpcState {
    async fn store(&self, protocol: Protocol, events: Vec<Event>) -> Result<usize, Status> {
        ingest::store(&self.engine, &self.metrics, protocol, events).await.map_err(store_status)
    }

    async fn write_batch(&self, batch: EventBatch, tenant: Option<&str>) -> Result<usize, Status> {
        let events = validate_batch(batch)
            .and_then(|mut events| ingest::scope_to_tenant(&mut events, tenant).map(|()| events))
            .map_err(|e| {
                self.metrics.invalid();
                Status::invalid_argument(e.to_string())
            })?;
        self.store(Protocol::Grpc, events).await
    }
}

#[tonic::async_trait]
impl Ingest for GrpcState {
    async fn write(&self, request: Request<EventBatch>) -> Result<Response<WriteAck>, Status> {
        let tenant = metadata_tenant(request.metadata());
        let batch = request.into_inner();
        self.metrics.received(Protocol::Grpc, prost::Message::encoded_len(&batch));
        let n = self.write_batch(batch, tenant.as_deref()).await?;
        Ok(Response::new(WriteAck { accepted: n as u64, batches: 1 }))
    }

    async fn write_stream(&self, request: Request<Streaming<EventBatch>>) -> Result<Response<WriteAck>, Status> {
        let tenant = metadata_tenant(request.metadata());
        let mut stream = request.into_inner();
        let (mut accepted, mut batches) = (0u64, 0u64);
        loop {
            let batch = match stream.message().await {
                Ok(Some(b)) => b,
                Ok(None) => break,
                Err(s) => {
                    return Err(Status::new(
                        s.code(),
                        format!(
                        "stream failed after {batches} batches: {}; the {accepted} events of those batches are stored",
                        s.message()
                    ),
                    ))
                }
            };
            self.metrics.received(Protocol::Grpc, prost::Message::encoded_len(&batch));
            match self.write_batch(batch, tenant.as_deref()).await {
                Ok(n) => {
                    accepted += n as u64;
                    batches += 1;
                }
                Err(s) => {
                    return Err(Status::new(
                        s.code(),
                        format!(
                            "batch {batches}: {}; nothing of it was stored, the {accepted} events of the {batches} batches before it are stored",
                            s.message()
                        ),
                    ))
                }
            }
        }
        Ok(Response::new(WriteAck { accepted, batches }))
    }
}

/// The tenant a gRPC request names in its `x-tenant` metadata, if any.
fn metadata_tenant(metadata: &tonic::metadata::MetadataMap) -> Option<String> {
    tenant_of(metadata.get("x-tenant").and_then(|v| v.to_str().ok())).map(str::to_owned)
}

/// The tenant a request names in its `x-tenant` header / metadata, if any.
pub fn tenant_of(value: Option<&str>) -> Option<&str> {
    value.map(str::trim).filter(|t| !t.is_empty())
}

#[tonic::async_trait]
impl TraceService for GrpcState {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let tenant = metadata_tenant(request.metadata());
        let req = request.into_inner();
        self.metrics.received(Protocol::OtlpGrpc, prost::Message::encoded_len(&req));
        let events = otlp::events_from_request(req, tenant.as_deref()).map_err(|e| {
            self.metrics.invalid();
            Status::invalid_argument(e.to_string())
        })?;
        self.store(Protocol::OtlpGrpc, events).await?;
        Ok(Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

/// Both services, ready to serve on one port. `max_message_bytes` caps a decoded request.
pub fn router(state: GrpcState, max_message_bytes: usize) -> tonic::service::Routes {
    use tonic::codec::CompressionEncoding::Gzip;
    let ingest = IngestServer::new(state.clone())
        .max_decoding_message_size(max_message_bytes)
        .accept_compressed(Gzip)
        .send_compressed(Gzip);
    let traces = TraceServiceServer::new(state)
        .max_decoding_message_size(max_message_bytes)
        .accept_compressed(Gzip)
        .send_compressed(Gzip);
    tonic::service::Routes::new(ingest).add_service(traces)
}
