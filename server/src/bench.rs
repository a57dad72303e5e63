//! `activemirror bench ingest`: a load generator that drives a running server over gRPC
//! (`activemirror.v1.Ingest/Write`) with the seeded benchmark workload and reports events/s,
//! MB/s and ack latency percentiles. Events are generated and encoded before the clock starts,
//! so the figure is the server's (plus the client's gRPC work), not the generator's.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};

use tonic::codec::{Codec, EncodeBuf, Encoder};
use tonic::codegen::{http, Bytes};

use crate::grpc::event_to_pb;
use crate::grpc::pb::{EventBatch, WriteAck};

/// Sends batches already protobuf-encoded (so a retry or a client never re-encodes) and
/// decodes the `WriteAck` with prost.
#[derive(Debug, Clone, Copy, Default)]
struct PreEncoded;

#[derive(Debug, Clone, Copy, Default)]
struct RawEncoder;

impl Encoder for RawEncoder {
    type Item = Bytes;
    type Error = tonic::Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl Codec for PreEncoded {
    type Encode = Bytes;
    type Decode = WriteAck;
    type Encoder = RawEncoder;
    type Decoder = <tonic_prost::ProstCodec<WriteAck, WriteAck> as Codec>::Decoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> Self::Decoder {
        tonic_prost::ProstCodec::<WriteAck, WriteAck>::default().decoder()
    }
}

#[derive(clap::Args, Debug, Clone)]
pub struct IngestBenchArgs {
    /// Address of the server's gRPC port, e.g. 127.0.0.1:4317 or http://127.0.0.1:4317
    #[arg(long, default_value = "127.0.0.1:4317")]
    pub grpc: String,
    /// Concurrent clients, each on its own connection.
    #[arg(long, default_value_t = 8)]
    pub clients: usize,
    /// Events per Write call.
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
    /// Events in all.
    #[arg(long, default_value_t = 1_000_000)]
    pub events: usize,
    /// Generator seed.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Tenant to write as (default: the generator's tenants).
    #[arg(long)]
    pub tenant: Option<String>,
    /// Offered load in events per second across all clients (0: as fast as the server acks).
    /// Batch `i` is due at `i * batch / rate` seconds, and its ack latency counts from then,
    /// so a server that falls behind shows it in the latencies.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Print the summary as one JSON object (for harnesses).
    #[arg(long)]
    pub json: bool,
}

/// What one run measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct IngestBenchReport {
    pub events: u64,
    pub batches: u64,
    pub bytes: u64,
    pub seconds: f64,
    pub events_per_sec: f64,
    pub mb_per_sec: f64,
    pub ack_p50_ms: f64,
    pub ack_p99_ms: f64,
    pub ack_max_ms: f64,
    pub retries_after_backpressure: u64,
}

/// When batch `i` (of `batch` events) is due under an offered load of `rate` events per
/// second, from the start of the run; `None` for no pacing (`rate` 0).
fn due_at(i: usize, batch: usize, rate: u64) -> Option<Duration> {
    (rate > 0).then(|| Duration::from_secs_f64(i as f64 * batch as f64 / rate as f64))
}

/// The value at quantile `q` (0..=1) of sorted `v` (nearest rank).
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn endpoint(addr: &str) -> String {
    if addr.starts_with("http://") || addr.starts_with("https://") {
        addr.to_owned()
    } else {
        format!("http://{addr}")
    }
}

/// Runs the load and returns what it measured.
pub async fn run_ingest(args: &IngestBenchArgs) -> anyhow::Result<IngestBenchReport> {
    anyhow::ensure!(args.clients > 0 && args.batch > 0, "--clients and --batch must be at least 1");
    let prep = ProgressBar::new(args.events as u64).with_style(
        ProgressStyle::with_template("generating {bar:30} {pos}/{len} events")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    // Pre-build every batch, dealt round-robin to the clients.
    let mut per_client: Vec<Vec<(Bytes, u64, Option<Duration>)>> = vec![Vec::new(); args.clients];
    let mut gen = benches::Generator::new(args.seed);
    let mut left = args.events;
    let mut total_bytes = 0u64;
    let mut i = 0;
    while left > 0 {
        let n = left.min(args.batch);
        let events = gen
            .by_ref()
            .take(n)
            .map(|mut e| {
                if let Some(t) = &args.tenant {
                    e.tenant = t.as_str().into();
                }
                event_to_pb(&e)
            })
            .collect();
        let b = Bytes::from(prost::Message::encode_to_vec(&EventBatch { events }));
        total_bytes += b.len() as u64;
        per_client[i % args.clients].push((b, n as u64, due_at(i, args.batch, args.rate)));
        i += 1;
        left -= n;
        prep.inc(n as u64);
    }
    prep.finish_and_clear();

    let url = endpoint(&args.grpc);
    let mut clients = Vec::with_capacity(args.clients);
    for _ in 0..args.clients {
        let ch = tonic::transport::Endpoint::from_shared(url.clone())
            .with_context(|| format!("bad address {url}"))?
            .tcp_nodelay(true)
            .connect()
            .await
            .with_context(|| format!("connecting to {url}"))?;
        clients.push(tonic::client::Grpc::new(ch));
    }

    let bar = ProgressBar::new(args.events as u64).with_style(
        ProgressStyle::with_template("ingest {bar:30} {pos}/{len} events {per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let retries = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (mut client, batches) in clients.into_iter().zip(per_client) {
        let bar = bar.clone();
        let retries = retries.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(batches.len());
            let mut acked = 0u64;
            let path = http::uri::PathAndQuery::from_static("/activemirror.v1.Ingest/Write");
            for (b, n, due) in batches {
                let t = match due {
                    Some(d) => {
                        tokio::time::sleep_until((start + d).into()).await;
                        start + d
                    }
                    None => Instant::now(),
                };
                loop {
                    client.ready().await.map_err(|e| anyhow::anyhow!("connection not ready: {e}"))?;
                    match client.unary(tonic::Request::new(b.clone()), path.clone(), PreEncoded).await {
                        Ok(ack) => {
                            anyhow::ensure!(
                                ack.get_ref().accepted == n,
                                "server acked {} of {n}",
                                ack.get_ref().accepted
                            );
                            break;
                        }
                        Err(s) if s.code() == tonic::Code::ResourceExhausted => {
                            retries.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        Err(s) => anyhow::bail!("write failed: {s}"),
                    }
                }
                lat.push(t.elapsed().as_secs_f64() * 1e3);
                acked += n;
                bar.inc(n);
            }
            Ok::<_, anyhow::Error>((lat, acked))
        }));
    }
    let mut lat = Vec::new();
    let mut events = 0u64;
    for t in tasks {
        let (l, n) = t.await.context("client task")??;
        lat.extend(l);
        events += n;
    }
    let secs = start.elapsed().as_secs_f64();
    bar.finish_and_clear();
    lat.sort_by(f64::total_cmp);
    Ok(IngestBenchReport {
        events,
        batches: lat.len() as u64,
        bytes: total_bytes,
        seconds: secs,
        events_per_sec: events as f64 / secs,
        mb_per_sec: total_bytes as f64 / secs / 1e6,
        ack_p50_ms: quantile(&lat, 0.5),
        ack_p99_ms: quantile(&lat, 0.99),
        ack_max_ms: lat.last().copied().unwrap_or(0.0),
        retries_after_backpressure: retries.load(Ordering::Relaxed),
    })
}

/// Prints a report for people (or one JSON object).
pub fn print_report(r: &IngestBenchReport, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(r)?);
    } else {
        println!(
            "ingested {} events in {} batches in {:.2} s: {:.0} events/s, {:.1} MB/s; ack latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; {} retries after RESOURCE_EXHAUSTED",
            r.events,
            r.batches,
            r.seconds,
            r.events_per_sec,
            r.mb_per_sec,
            r.ack_p50_ms,
            r.ack_p99_ms,
            r.ack_max_ms,
            r.retries_after_backpressure
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{due_at, quantile};
    use std::time::Duration;

    #[test]
    fn paced_batches_are_due_at_the_offered_rate() {
        assert_eq!(due_at(0, 1000, 100_000), Some(Duration::ZERO));
        assert_eq!(due_at(100, 1000, 100_000), Some(Duration::from_secs(1)));
        assert_eq!(due_at(3, 500, 1_000), Some(Duration::from_millis(1500)));
        assert_eq!(due_at(7, 1000, 0), None, "unpaced");
    }

    #[test]
    fn nearest_rank_quantiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), 50.0);
        assert_eq!(quantile(&v, 0.99), 99.0);
        assert_eq!(quantile(&v, 1.0), 100.0);
        assert_eq!(quantile(&v, 0.0), 1.0);
        assert_eq!(quantile(&[], 0.5), 0.0);
        assert_eq!(quantile(&[7.0], 0.99), 7.0);
    }
}
