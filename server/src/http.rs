//! `activemirror start`: configuration (embedded defaults < YAML file < environment < flags),
//! the HTTP API (axum) and graceful shutdown.

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use engine::{Engine, EngineConfig};
use serde::Deserialize;

use crate::cli::{format_batches, OutputFormat};
use crate::config::{self, QueryLimits, Settings, StartArgs};
use crate::grpc::{self, GrpcState};
use crate::ingest::{self, Admission, IngestGate, IngestMetrics, Protocol, StoreError};
use crate::otlp;

#[derive(Default)]
struct Metrics {
    queries: AtomicU64,
    query_errors: AtomicU64,
    query_micros: AtomicU64,
    query_buckets: [AtomicU64; 8],
}

/// Largest HTTP/2 frame the gRPC port accepts: a whole batch fits in one.
const GRPC_MAX_FRAME: u32 = 1 << 20;
/// How much one gRPC request may send before the server has read it.
const GRPC_STREAM_WINDOW: u32 = 4 << 20;
/// The same for all requests of one connection together.
const GRPC_CONNECTION_WINDOW: u32 = 16 << 20;

const QUERY_BUCKETS_MS: [f64; 8] = [1.0, 5.0, 10.0, 50.0, 100.0, 500.0, 1000.0, 5000.0];

struct AppState {
    engine: Arc<Engine>,
    query: QueryLimits,
    metrics: Metrics,
    ingest: Arc<IngestMetrics>,
    /// Bounds the ingest request bytes being decoded and appended at once (HTTP and gRPC).
    gate: Arc<IngestGate>,
    body_limit: usize,
    /// One prepared SQL session per tenant scope (`None`: all tenants), reused across
    /// requests. Requests may not change it: DDL, DML and SET are refused over HTTP.
    sessions: parking_lot::Mutex<std::collections::HashMap<Option<String>, datafusion::prelude::SessionContext>>,
    /// The plans of repeated statements, by tenant scope.
    plans: query::plans::PlanCache,
    /// One memory budget (`query.memory_mb`) shared by the sessions of every tenant scope.
    runtime: Arc<datafusion::execution::runtime_env::RuntimeEnv>,
}

/// Most tenant scopes kept prepared; beyond it the cache starts over.
const SESSION_CACHE_MAX: usize = 1024;

impl AppState {
    async fn session(&self, tenant: Option<String>) -> datafusion::error::Result<datafusion::prelude::SessionContext> {
        if let Some(ctx) = self.sessions.lock().get(&tenant) {
            return Ok(ctx.clone());
        }
        let ctx = query::session_with_runtime(self.engine.clone(), tenant.clone(), self.runtime.clone()).await?;
        let mut cache = self.sessions.lock();
        if cache.len() >= SESSION_CACHE_MAX {
            cache.clear();
        }
        Ok(cache.entry(tenant).or_insert(ctx).clone())
    }
}

type Shared = Arc<AppState>;

fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": msg.into() }))).into_response()
}

pub fn start(args: StartArgs) -> anyhow::Result<()> {
    let file = match &args.config {
        Some(p) => config::load_file(p)?,
        None => config::FileConfig::default(),
    };
    let settings = config::resolve_within(&args, file, config::cgroup_memory_limit())?;
    if let Some(limit) = settings.memory_limit {
        tracing::info!(
            limit_mb = limit >> 20,
            max_buffered_mb = settings.max_buffered_bytes >> 20,
            query_cache_mb = settings.query_cache_bytes >> 20,
            query_memory_mb = settings.query.memory_bytes >> 20,
            max_inflight_mb = settings.max_inflight_bytes >> 20,
            "cgroup memory limit: sizes not set are fitted to it"
        );
    }
    let Settings { data_dir, http_addr, grpc_addr, .. } = settings.clone();
    let cfg = EngineConfig {
        max_buffered_bytes: settings.max_buffered_bytes,
        flush_age: settings.flush_interval,
        compaction_trigger: settings.compaction_trigger,
        compaction_niceness: settings.compaction_niceness,
        merge_span: settings.merge_span,
        settled_merge_span: settings.settled_merge_span,
        retention: settings.retention,
        archive_after: settings.archive_after,
        archiver: Some(Arc::new(query::archive::ParquetArchiver::default())),
        // A compaction's input is bounded like the ingest buffer.
        compaction_max_bytes: (settings.max_buffered_bytes as u64).max(32 << 20),
        background_thread_hook: Some(crate::memory::thread_idle),
        after_compaction_hook: Some(crate::memory::trim_thread_arena),
        ..EngineConfig::default()
    };
    // An ingest request waits as long for room in the [`IngestGate`] as for room in the
    // engine's buffer before its 429 / `RESOURCE_EXHAUSTED`.
    let admission_wait = cfg.backpressure_wait;
    let (engine, report) =
        Engine::open(&data_dir, cfg).with_context(|| format!("opening data directory {}", data_dir.display()))?;
    tracing::info!(
        dir = %data_dir.display(),
        segments = report.segments,
        rows = report.segment_rows,
        replayed = report.replayed_events,
        wal_dropped_bytes = report.wal.dropped_bytes,
        "data directory open"
    );
    let engine = Arc::new(engine);
    query::block_cache().set_capacity(settings.query_cache_bytes);
    query::text_page_cache().set_capacity(settings.query_text_cache_bytes);
    query::text_index_cache().set_capacity(settings.query_index_cache_bytes);
    query::segment_index_cache().set_capacity(settings.query_segment_index_cache_bytes);
    query::cache::set_decode_thread_exit_hook(crate::memory::trim_thread_arena);
    let body_limit = settings.max_body_bytes;
    let ingest_metrics = Arc::new(IngestMetrics::default());
    let gate = Arc::new(IngestGate::new(settings.max_inflight_bytes as u64, admission_wait));
    let state = Arc::new(AppState {
        engine: engine.clone(),
        query: settings.query.clone(),
        metrics: Metrics::default(),
        ingest: ingest_metrics.clone(),
        gate: gate.clone(),
        body_limit,
        sessions: Default::default(),
        plans: query::plans::PlanCache::new(query::plans::DEFAULT_PLAN_CACHE_ENTRIES),
        runtime: query::bounded_runtime(settings.query.memory_bytes)?,
    });
    let grpc_routes = grpc::router(GrpcState { engine: engine.clone(), metrics: ingest_metrics, gate }, body_limit);
    let app = Router::new()
        .route("/v1/events", post(ingest))
        .route("/v1/traces", post(otlp_traces))
        .route("/v1/sql", post(sql))
        .route("/healthz", get(|| async { "ok\n" }));
    let app = if settings.metrics_enabled { app.route("/metrics", get(metrics)) } else { app };
    let app = app
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn_with_state(state.clone(), refuse_declared_oversize))
        .layer(axum::middleware::map_response_with_state(state.clone(), body_too_large))
        .with_state(state.clone());
    let monitoring = settings.metrics_port.map(|port| {
        let r = Router::new().route("/healthz", get(|| async { "ok\n" }));
        let r = if settings.metrics_enabled { r.route("/metrics", get(metrics)) } else { r };
        (SocketAddr::from(([127, 0, 0, 1], port)), r.with_state(state))
    });
    // Deep statements recurse in planning; 32 MB stacks (reserved, touched only as used) keep
    // the largest that `query::limits` lets through well inside them.
    // Each thread gives its malloc arena's free top back at each memory release
    // (`memory`): workers when they park, every thread as it stops.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .thread_stack_size(32 << 20)
        .on_thread_park(crate::memory::thread_idle)
        .on_thread_stop(crate::memory::thread_stopping)
        .enable_all()
        .build()?;
    let idle_engine = engine.clone();
    rt.block_on(async move {
        let listener =
            tokio::net::TcpListener::bind(http_addr).await.with_context(|| format!("binding {http_addr}"))?;
        let grpc_listener =
            tokio::net::TcpListener::bind(grpc_addr).await.with_context(|| format!("binding gRPC {grpc_addr}"))?;
        tracing::info!(addr = %listener.local_addr()?, "HTTP listening");
        tracing::info!(addr = %grpc_listener.local_addr()?, "gRPC listening");
        tokio::spawn(crate::memory::release_when_idle(idle_engine));
        // One signal stops both servers: each stops accepting and finishes in-flight calls.
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            shutdown_signal().await;
            let _ = stop_tx.send(true);
        });
        let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let grpc = tonic::transport::Server::builder()
            // A batch of 1,000 events is about 700 KB. With h2's 16 KB frames and 1 MB windows
            // it arrives in dozens of frames and waits on window updates; in one frame it is
            // decoded from one buffer. Measured: 6-8% more events/s and 5% less server CPU
            // per 1M-event burst (docs/benchmarks.md, nineteenth round).
            .max_frame_size(Some(GRPC_MAX_FRAME))
            .initial_stream_window_size(Some(GRPC_STREAM_WINDOW))
            .initial_connection_window_size(Some(GRPC_CONNECTION_WINDOW))
            .add_routes(grpc_routes)
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(grpc_listener).with_nodelay(Some(true)),
                stopped(stop_rx.clone()),
            );
        let http = axum::serve(listener, app).with_graceful_shutdown(stopped(stop_rx.clone()));
        let mon = async {
            if let Some((addr, router)) = monitoring {
                let l =
                    tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding monitoring {addr}"))?;
                tracing::info!(addr = %l.local_addr()?, "monitoring listening");
                axum::serve(l, router).with_graceful_shutdown(stopped(stop_rx.clone())).await?;
            }
            Ok::<_, anyhow::Error>(())
        };
        let (h, g, m) = tokio::join!(http.into_future(), grpc, mon);
        h?;
        g?;
        m?;
        Ok::<_, anyhow::Error>(())
    })?;
    tracing::info!("shutting down: flushing");
    engine.close()?;
    Ok(())
}

/// Bodies over the configured limit are rejected by axum's body limit with a plain-text 413;
/// count them and answer in the API's JSON error shape.
/// Most bytes of an oversized body read (and dropped) before its 413, as a multiple of the
/// limit, and for how long at most.
const OVERSIZE_DRAIN_FACTOR: u64 = 4;
const OVERSIZE_DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(10);

/// A request that declares a body over the limit gets its 413 without being handled, and
/// only after the server has read and dropped what the client sends (up to
/// [`OVERSIZE_DRAIN_FACTOR`] times the limit, for [`OVERSIZE_DRAIN_TIME`] at most): answered
/// while the client is still writing, the client would see its connection reset (EPIPE)
/// rather than the 413. Past those bounds the answer goes out at once and the connection
/// closes. Bodies without a declared length are cut by `DefaultBodyLimit` as before.
async fn refuse_declared_oversize(
    State(st): State<Shared>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let declared =
        req.headers().get(axum::http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
    let limit = st.body_limit as u64;
    // A client that waits for `100 Continue` has sent nothing yet: reading would invite the
    // body; answering at once spares it.
    let waits_to_send = req
        .headers()
        .get(axum::http::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    match declared {
        Some(n) if n > limit => {
            if !waits_to_send && n <= limit.saturating_mul(OVERSIZE_DRAIN_FACTOR) {
                let _ = tokio::time::timeout(OVERSIZE_DRAIN_TIME, drain(req.into_body())).await;
            }
            // Counted and worded by `body_too_large`, like a body cut while read.
            StatusCode::PAYLOAD_TOO_LARGE.into_response()
        }
        _ => next.run(req).await,
    }
}

/// Read a body to its end, dropping each frame.
async fn drain(mut body: axum::body::Body) {
    use axum::body::HttpBody;
    while let Some(Ok(_)) = std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await {}
}

async fn body_too_large(State(st): State<Shared>, resp: Response) -> Response {
    if resp.status() != StatusCode::PAYLOAD_TOO_LARGE {
        return resp;
    }
    st.ingest.rejected_too_large.fetch_add(1, Ordering::Relaxed);
    error(StatusCode::PAYLOAD_TOO_LARGE, "request body exceeds the configured limit (server.max_body_mb)")
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

fn store_error(e: StoreError) -> Response {
    match e {
        StoreError::Invalid(msg) => error(StatusCode::BAD_REQUEST, msg),
        StoreError::Backpressure { .. } | StoreError::InFlight { .. } => {
            let mut r = error(StatusCode::TOO_MANY_REQUESTS, e.to_string());
            r.headers_mut().insert("retry-after", HeaderValue::from_static("1"));
            r
        }
        other => error(StatusCode::INTERNAL_SERVER_ERROR, other.to_string()),
    }
}

async fn ingest(State(st): State<Shared>, req: axum::extract::Request) -> Response {
    let m = &st.ingest;
    let headers = req.headers().clone();
    let (body, _admission) = match admitted_body(&st, &headers, req, Protocol::Http).await {
        Ok(b) => b,
        Err(resp) => return *resp,
    };
    let tenant = grpc::tenant_of(headers.get("x-tenant").and_then(|v| v.to_str().ok())).map(str::to_owned);
    let decode = move || {
        let text = std::str::from_utf8(&body).map_err(|_| "body is not UTF-8".to_owned())?;
        let mut events = engine::parse_body(text).map_err(|e| e.to_string())?;
        ingest::scope_to_tenant(&mut events, tenant.as_deref()).map_err(|e| e.to_string())?;
        Ok::<_, String>(events)
    };
    match ingest::decode_and_store(&st.engine, m, Protocol::Http, decode).await {
        Ok(n) => Json(serde_json::json!({ "accepted": n })).into_response(),
        Err(e) => store_error(e),
    }
}

/// An ingest request's body, read and decoded ([`decoded_body`]) once the [`IngestGate`] has
/// admitted its bytes: before it is read when its length is declared (a waiting request holds
/// none of it), else once read; again as decompressed. The [`Admission`] is held until the
/// batch is stored or refused. `headers` are `req`'s.
async fn admitted_body(
    st: &AppState,
    headers: &HeaderMap,
    req: axum::extract::Request,
    protocol: Protocol,
) -> Result<(Bytes, Admission), Box<Response>> {
    use axum::extract::FromRequest;
    let refuse = |e| Box::new(store_error(e));
    let mut admission = Admission::default();
    let declared =
        headers.get(axum::http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.trim().parse::<usize>().ok());
    if let Some(n) = declared {
        st.gate.admit(&mut admission, n, &st.ingest).await.map_err(refuse)?;
    }
    // Reads within the body limit (`DefaultBodyLimit`; its 413 is reworded by `body_too_large`).
    let body = Bytes::from_request(req, &()).await.map_err(|r| Box::new(r.into_response()))?;
    st.ingest.received(protocol, body.len());
    st.gate.admit(&mut admission, body.len(), &st.ingest).await.map_err(refuse)?;
    let body = decoded_body(st, headers, body).await?;
    st.gate.admit(&mut admission, body.len(), &st.ingest).await.map_err(refuse)?;
    Ok((body, admission))
}

/// A request body as sent (`Content-Encoding` absent or `identity`) or gunzipped (`gzip`),
/// the decompressed size held to the body limit (413 above it); any other encoding is 415.
/// Gunzipping runs on a blocking thread (tens of megabytes take a second), not on the async
/// worker.
async fn decoded_body(st: &AppState, headers: &HeaderMap, body: Bytes) -> Result<Bytes, Box<Response>> {
    let m = &st.ingest;
    match headers.get("content-encoding").and_then(|v| v.to_str().ok()).unwrap_or("") {
        "" | "identity" => Ok(body),
        "gzip" => {
            use std::io::Read;
            let limit = st.body_limit as u64 + 1;
            let gunzip = move || {
                let mut out = Vec::new();
                flate2::read::GzDecoder::new(&body[..]).take(limit).read_to_end(&mut out).map(|_| out)
            };
            let decoded = tokio::task::spawn_blocking(gunzip).await.unwrap_or_else(|e| Err(std::io::Error::other(e)));
            let out = match decoded {
                Ok(out) => out,
                Err(e) => {
                    m.invalid();
                    return Err(Box::new(error(StatusCode::BAD_REQUEST, format!("gzip body does not decode: {e}"))));
                }
            };
            if out.len() as u64 >= limit {
                m.rejected_too_large.fetch_add(1, Ordering::Relaxed);
                return Err(Box::new(error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "decompressed body exceeds the configured limit",
                )));
            }
            Ok(Bytes::from(out))
        }
        other => {
            m.invalid();
            Err(Box::new(error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("content-encoding `{other}` is not supported (gzip)"),
            )))
        }
    }
}

/// OTLP/HTTP traces (`POST /v1/traces`): protobuf (`application/x-protobuf`, the default) or
/// JSON (`application/json`), optionally gzip-encoded; answers in the request's encoding.
async fn otlp_traces(State(st): State<Shared>, req: axum::extract::Request) -> Response {
    use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
    use prost::Message;
    let m = &st.ingest;
    let headers = req.headers().clone();
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("");
    let json = header("content-type").starts_with("application/json");
    let (body, _admission) = match admitted_body(&st, &headers, req, Protocol::OtlpHttp).await {
        Ok(b) => b,
        Err(resp) => return *resp,
    };
    let tenant = grpc::tenant_of(headers.get("x-tenant").and_then(|v| v.to_str().ok())).map(str::to_owned);
    let decode = move || {
        let req = if json {
            serde_json::from_slice::<ExportTraceServiceRequest>(&body).map_err(|e| format!("invalid OTLP JSON: {e}"))
        } else {
            ExportTraceServiceRequest::decode(&body[..]).map_err(|e| format!("invalid OTLP protobuf: {e}"))
        }?;
        otlp::events_from_request(req, tenant.as_deref()).map_err(|e| e.to_string())
    };
    if let Err(e) = ingest::decode_and_store(&st.engine, m, Protocol::OtlpHttp, decode).await {
        return store_error(e);
    }
    let resp = ExportTraceServiceResponse { partial_success: None };
    if json {
        ([("content-type", "application/json")], "{}").into_response()
    } else {
        ([("content-type", "application/x-protobuf")], resp.encode_to_vec()).into_response()
    }
}

#[derive(Deserialize)]
struct SqlBody {
    sql: String,
}

#[derive(Deserialize)]
struct SqlParams {
    format: Option<String>,
}

async fn sql(State(st): State<Shared>, Query(params): Query<SqlParams>, headers: HeaderMap, body: Bytes) -> Response {
    let m = &st.metrics;
    let req: SqlBody = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("body must be {{\"sql\": \"...\"}}: {e}")),
    };
    let tenant = headers.get("x-tenant").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let start = Instant::now();
    let limit = st.query.max_results;
    let run = async {
        query::limits::check_statement(&req.sql)?;
        let ctx = st.session(tenant.clone()).await?;
        if let Some(result) = query::point::try_run(&ctx, &req.sql).await {
            return result;
        }
        // Read-only: the prepared session is shared, so nothing may change it.
        let options = datafusion::execution::context::SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        // One more than allowed tells us whether the result was cut (EXPLAIN is never cut).
        st.plans.run(tenant.as_deref(), &ctx, &req.sql, options, limit.saturating_add(1)).await
    };
    let result = tokio::time::timeout(st.query.timeout, run).await;
    let elapsed = start.elapsed();
    m.queries.fetch_add(1, Ordering::Relaxed);
    crate::memory::note_query();
    m.query_micros.fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    let ms = elapsed.as_secs_f64() * 1e3;
    for (i, b) in QUERY_BUCKETS_MS.iter().enumerate() {
        if ms <= *b {
            m.query_buckets[i].fetch_add(1, Ordering::Relaxed);
        }
    }
    let batches = match result {
        Err(_) => {
            m.query_errors.fetch_add(1, Ordering::Relaxed);
            return error(
                StatusCode::REQUEST_TIMEOUT,
                format!("query exceeded the timeout of {} ms (query.timeout)", st.query.timeout.as_millis()),
            );
        }
        Ok(Err(e)) => {
            m.query_errors.fetch_add(1, Ordering::Relaxed);
            return error(StatusCode::BAD_REQUEST, e.to_string());
        }
        Ok(Ok(b)) => b,
    };
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    let truncated = rows > limit;
    let batches = if truncated {
        let mut keep = Vec::new();
        let mut left = limit;
        for b in batches {
            let take = b.num_rows().min(left);
            keep.push(b.slice(0, take));
            left -= take;
        }
        keep
    } else {
        batches
    };
    let encoding = Instant::now();
    let mut resp = match params.format.as_deref().unwrap_or("json") {
        "csv" => match format_batches(&batches, OutputFormat::Csv) {
            Ok(s) => ([("content-type", "text/csv")], s).into_response(),
            Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        },
        "arrow" => {
            let mut buf = Vec::new();
            let written = (|| -> anyhow::Result<()> {
                // Plain string types: readers without Utf8View support get what they expect.
                let plain = batches.iter().map(query::schema::plain_batch).collect::<Result<Vec<_>, _>>()?;
                if let Some(schema) = plain.first().map(|b| b.schema()) {
                    let mut w = arrow::ipc::writer::StreamWriter::try_new(&mut buf, &schema)?;
                    for b in &plain {
                        w.write(b)?;
                    }
                    w.finish()?;
                }
                Ok(())
            })();
            match written {
                Ok(()) => ([("content-type", "application/vnd.apache.arrow.stream")], buf).into_response(),
                Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
            }
        }
        "json" => match query::json::to_json_array(&batches) {
            Ok(body) => ([("content-type", "application/json")], body).into_response(),
            Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        },
        other => error(StatusCode::BAD_REQUEST, format!("unknown format `{other}` (json, csv, arrow)")),
    };
    // Where the time went, for clients and browser tools (W3C Server-Timing): planning and
    // running the query, then encoding its result.
    let timing = format!("query;dur={ms:.3}, encode;dur={:.3}", encoding.elapsed().as_secs_f64() * 1e3);
    if let Ok(v) = HeaderValue::from_str(&timing) {
        resp.headers_mut().insert("server-timing", v);
    }
    if truncated {
        resp.headers_mut().insert("x-activemirror-truncated", HeaderValue::from_static("true"));
        if let Ok(v) = HeaderValue::from_str(&format!("result cut to query.max_results = {limit} rows")) {
            resp.headers_mut().insert("warning", v);
        }
    }
    resp
}

/// Writes one Prometheus histogram: cumulative `counts` per upper bound, then +Inf, sum, count.
fn histogram(s: &mut String, name: &str, help: &str, bounds: &[f64], counts: &[u64], count: u64, sum: f64) {
    use std::fmt::Write;
    let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} histogram");
    for (b, n) in bounds.iter().zip(counts) {
        let _ = writeln!(s, "{name}_bucket{{le=\"{b}\"}} {n}");
    }
    let _ = writeln!(s, "{name}_bucket{{le=\"+Inf\"}} {count}\n{name}_sum {sum}\n{name}_count {count}");
}

async fn metrics(State(st): State<Shared>) -> Response {
    use std::fmt::Write;
    let m = &st.metrics;
    let e = st.engine.stats();
    let mut s = String::new();
    let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let ing = &st.ingest;
    for (metric, help, get) in [
        ("activemirror_events_ingested_total", "Events stored, by ingest protocol.", 0),
        ("activemirror_batches_total", "Batches (requests) stored, by ingest protocol.", 1),
        ("activemirror_ingest_bytes_total", "Request bytes received, by ingest protocol.", 2),
    ] {
        let _ = writeln!(s, "# HELP {metric} {help}\n# TYPE {metric} counter");
        for p in Protocol::ALL {
            let c = ing.of(p);
            let v = [&c.events, &c.batches, &c.bytes][get];
            let _ = writeln!(s, "{metric}{{protocol=\"{}\"}} {}", p.label(), l(v));
        }
    }
    let _ = writeln!(s, "activemirror_engine_events_appended_total {}", l(&e.events_appended));
    let _ = writeln!(s, "# TYPE activemirror_rejected_requests_total counter");
    let _ = writeln!(s, "activemirror_rejected_requests_total{{reason=\"invalid\"}} {}", l(&ing.rejected_invalid));
    let _ = writeln!(
        s,
        "activemirror_rejected_requests_total{{reason=\"backpressure\"}} {}",
        l(&ing.rejected_backpressure)
    );
    let _ = writeln!(s, "activemirror_rejected_requests_total{{reason=\"too_large\"}} {}", l(&ing.rejected_too_large));
    let _ = writeln!(s, "activemirror_rejected_requests_total{{reason=\"inflight\"}} {}", l(&ing.rejected_inflight));
    let _ = writeln!(
        s,
        "# HELP activemirror_ingest_inflight_bytes Request bytes admitted and not yet stored or refused (all protocols).\n\
         # TYPE activemirror_ingest_inflight_bytes gauge\nactivemirror_ingest_inflight_bytes {}\n\
         # TYPE activemirror_ingest_inflight_limit_bytes gauge\nactivemirror_ingest_inflight_limit_bytes {}",
        st.gate.held(),
        st.gate.limit()
    );
    let w = st.engine.wal().stats();
    let secs: Vec<f64> = wal::FSYNC_BUCKETS_S.to_vec();
    histogram(
        &mut s,
        "activemirror_wal_fsync_seconds",
        "Latency of WAL fsyncs (one per commit group).",
        &secs,
        &w.fsync_buckets,
        w.fsyncs,
        w.fsync_seconds_sum,
    );
    let groups: Vec<f64> = wal::GROUP_BUCKETS.iter().map(|b| *b as f64).collect();
    histogram(
        &mut s,
        "activemirror_wal_group_records",
        "Records made durable per commit group (group commit size).",
        &groups,
        &w.group_buckets,
        w.groups,
        w.group_records_sum as f64,
    );
    let _ = writeln!(s, "activemirror_flushes_total {}", l(&e.flushes));
    let _ = writeln!(s, "activemirror_compactions_total {}", l(&e.compactions));
    let _ = writeln!(s, "activemirror_compactions_sorted_in_memory_total {}", l(&e.compactions_sorted_in_memory));
    let _ = writeln!(s, "activemirror_compactions_urgent_total {}", l(&e.compactions_urgent));
    let _ = writeln!(s, "activemirror_compactions_warm_total {}", l(&e.compactions_warm));
    let snap = st.engine.snapshot();
    for tier in [engine::Tier::Hot, engine::Tier::Warm] {
        let segs: Vec<_> = snap.segments.iter().filter(|x| x.entry.tier == tier).collect();
        let name = format!("{tier:?}").to_lowercase();
        let _ = writeln!(s, "activemirror_segments{{tier=\"{name}\"}} {}", segs.len());
        let bytes: u64 = segs.iter().map(|x| x.segment.file_bytes()).sum();
        let _ = writeln!(s, "activemirror_segment_bytes{{tier=\"{name}\"}} {bytes}");
    }
    let _ = writeln!(s, "activemirror_segments{{tier=\"cold\"}} {}", snap.archives.len());
    let cold_bytes: u64 = snap.archives.iter().map(|a| a.entry.bytes).sum();
    let _ = writeln!(s, "activemirror_segment_bytes{{tier=\"cold\"}} {cold_bytes}");
    let _ = writeln!(s, "activemirror_archived_segments_total {}", l(&e.archived_segments));
    let _ = writeln!(s, "activemirror_archived_rows_total {}", l(&e.archived_rows));
    let (buf_bytes, buf_rows) = st.engine.buffered();
    let _ = writeln!(s, "activemirror_buffered_bytes {buf_bytes}");
    let _ = writeln!(s, "activemirror_buffered_rows {buf_rows}");
    let bounds: Vec<f64> = QUERY_BUCKETS_MS.iter().map(|b| b / 1e3).collect();
    let counts: Vec<u64> = m.query_buckets.iter().map(l).collect();
    histogram(
        &mut s,
        "activemirror_query_seconds",
        "Latency of /v1/sql queries.",
        &bounds,
        &counts,
        l(&m.queries),
        l(&m.query_micros) as f64 / 1e6,
    );
    let _ = writeln!(s, "activemirror_query_errors_total {}", l(&m.query_errors));
    for (name, c) in [
        ("block_cache", query::block_cache().stats()),
        ("text_cache", query::text_page_cache().stats()),
        ("index_cache", query::text_index_cache().stats()),
        ("segment_index_cache", query::segment_index_cache().stats()),
    ] {
        let _ = writeln!(s, "activemirror_{name}_hits_total {}", c.hits);
        let _ = writeln!(s, "activemirror_{name}_misses_total {}", c.misses);
        let _ = writeln!(s, "activemirror_{name}_entries {}", c.entries);
        let _ = writeln!(s, "activemirror_{name}_bytes {}", c.bytes);
        let _ = writeln!(s, "activemirror_{name}_capacity_bytes {}", c.capacity);
    }
    let _ = writeln!(
        s,
        "# HELP activemirror_memory_releases_total Times the server, idle or lightly loaded, returned freed memory to the system.\n\
         # TYPE activemirror_memory_releases_total counter\nactivemirror_memory_releases_total {}",
        crate::memory::releases()
    );
    if let Some(p) = crate::process::read() {
        crate::process::write_metrics(&mut s, &p);
    }
    ([("content-type", "text/plain; version=0.0.4")], s).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn refusals_for_room_are_429_with_retry_after_and_say_why() {
        for (e, says) in [
            (StoreError::InFlight { held: 1 << 20, limit: 1 << 20 }, "server.max_inflight_mb"),
            (StoreError::Backpressure { buffered: 10, limit: 10 }, "buffer full"),
        ] {
            let r = store_error(e);
            assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
            assert_eq!(r.headers().get("retry-after").map(|v| v.as_bytes()), Some(&b"1"[..]));
            let body = axum::body::to_bytes(r.into_body(), 1 << 16).await.expect("body");
            let text = String::from_utf8_lossy(&body);
            assert!(text.contains(says) && text.starts_with("{\"error\""), "{text}");
        }
        let r = store_error(StoreError::Task("panicked".into()));
        assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
