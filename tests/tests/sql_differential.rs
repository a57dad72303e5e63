//! Differential SQL suite: every query runs on our `events` provider (data split between
//! segments, compacted segments and the in-memory buffer) and on DataFusion's own in-memory
//! table built independently from the same events; the results must be identical.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, Float64Builder, Int64Builder, MapBuilder, RecordBatch, StringBuilder, TimestampNanosecondBuilder,
};
use benches::Generator;
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use engine::validate::hex;
use engine::{Engine, EngineConfig};
use segments::Event;

/// The `events` schema with every string as plain `Utf8`: the baseline keeps DataFusion's
/// ordinary string arrays, so the provider's `Utf8View` columns are checked against them.
fn baseline_schema() -> arrow::datatypes::SchemaRef {
    use arrow::datatypes::{DataType, Field, Schema};
    let fields: Vec<Field> = query::schema::events_schema()
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Utf8View => f.as_ref().clone().with_data_type(DataType::Utf8),
            _ => f.as_ref().clone(),
        })
        .collect();
    Arc::new(Schema::new(fields))
}

/// Arrow batch for `events`, built with plain builders (independent of the provider's decoder).
fn baseline_batch(events: &[Event]) -> RecordBatch {
    let schema = baseline_schema();
    let s = |f: &dyn Fn(&Event) -> Option<String>| -> ArrayRef {
        let mut b = StringBuilder::new();
        for e in events {
            b.append_option(f(e));
        }
        Arc::new(b.finish())
    };
    let fl = |f: &dyn Fn(&Event) -> Option<f64>| -> ArrayRef {
        let mut b = Float64Builder::new();
        for e in events {
            b.append_option(f(e));
        }
        Arc::new(b.finish())
    };
    let int = |f: &dyn Fn(&Event) -> Option<i64>| -> ArrayRef {
        let mut b = Int64Builder::new();
        for e in events {
            b.append_option(f(e));
        }
        Arc::new(b.finish())
    };
    let mut ts = TimestampNanosecondBuilder::new().with_timezone("UTC");
    for e in events {
        ts.append_value(e.timestamp_ns);
    }
    let mut map = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
    for e in events {
        for (k, v) in &e.attributes {
            map.keys().append_value(k);
            map.values().append_value(v);
        }
        map.append(true).expect("map row");
    }
    let map: ArrayRef = Arc::new(map.finish());
    let cols: Vec<ArrayRef> = vec![
        s(&|e| Some(e.tenant.to_string())),
        s(&|e| Some(hex(&e.trace_id))),
        s(&|e| Some(hex(&e.span_id))),
        s(&|e| e.parent_span_id.map(|p| hex(&p))),
        s(&|e| Some(e.agent_id.to_string())),
        s(&|e| e.session_id.as_deref().map(str::to_owned)),
        Arc::new(ts.finish()),
        s(&|e| Some(e.kind.to_string())),
        s(&|e| e.name.as_deref().map(str::to_owned)),
        s(&|e| e.content.clone()),
        s(&|e| e.intent.as_deref().map(str::to_owned)),
        fl(&|e| e.confidence),
        fl(&|e| e.duration_ms),
        s(&|e| Some(e.status.to_string())),
        s(&|e| e.error_message.clone()),
        s(&|e| e.model.as_deref().map(str::to_owned)),
        int(&|e| e.input_tokens),
        int(&|e| e.output_tokens),
        fl(&|e| e.cost_usd),
        // Cast the builder's map type (field names differ) to the table's.
        arrow::compute::cast(&map, schema.field(19).data_type()).expect("map cast"),
    ];
    RecordBatch::try_new(schema, cols).expect("baseline batch")
}

async fn render(ctx: &SessionContext, sql: &str) -> Result<Vec<String>, String> {
    render_batches(query::run_sql(ctx, sql).await, sql)
}

/// As `render`, always through DataFusion's planner (never the point-lookup path).
async fn render_planned(ctx: &SessionContext, sql: &str) -> Result<Vec<String>, String> {
    let batches = match ctx.sql(sql).await {
        Ok(df) => query::plans::with_schema(df).await,
        Err(e) => Err(e),
    };
    render_batches(batches, sql)
}

/// The table text of a result, its lines sorted unless the query orders its rows.
fn render_batches(batches: datafusion::error::Result<Vec<RecordBatch>>, sql: &str) -> Result<Vec<String>, String> {
    let batches = batches.map_err(|e| e.to_string())?;
    let text = arrow::util::pretty::pretty_format_batches(&batches).map_err(|e| e.to_string())?.to_string();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    if !sql.to_lowercase().contains("order by") {
        lines.sort();
    }
    Ok(lines)
}

const QUERIES: &[&str] = &[
    "SELECT count(*) FROM events",
    "SELECT kind, count(*) FROM events GROUP BY kind",
    "SELECT tenant, agent_id, count(*) AS n FROM events GROUP BY tenant, agent_id ORDER BY n DESC, tenant, agent_id LIMIT 10",
    "SELECT count(*) FROM events WHERE tenant = 'acme'",
    // Index-only counts (bitmaps instead of rows), with null groups, filters and several keys.
    "SELECT intent, count(*) AS n FROM events GROUP BY intent",
    "SELECT status, intent, count(*), count(1) AS ones FROM events WHERE tenant = 'acme' GROUP BY status, intent",
    "SELECT model, kind, count(*) FROM events WHERE kind IN ('llm_call', 'tool_call') AND intent IS NOT NULL GROUP BY model, kind",
    "SELECT agent_id, count(*) AS n FROM events WHERE status = 'error' GROUP BY agent_id ORDER BY n DESC, agent_id LIMIT 5",
    "SELECT kind, count(*) FROM events WHERE timestamp >= '2025-06-01T00:01:30Z' GROUP BY kind",
    "SELECT count(*) FROM events WHERE tenant IN ('acme', 'globex') AND kind = 'llm_call'",
    "SELECT count(*) FROM events WHERE tenant NOT IN ('acme') AND status = 'error'",
    "SELECT count(*) FROM events WHERE intent IS NULL",
    "SELECT count(*) FROM events WHERE intent IS NOT NULL AND model IS NULL",
    "SELECT count(*) FROM events WHERE intent != 'refund'",
    "SELECT count(*) FROM events WHERE intent = 'refund' OR kind = 'output'",
    "SELECT count(*) FROM events WHERE NOT (status = 'ok')",
    "SELECT count(*) FROM events WHERE confidence < 0.5",
    // Float comparisons the scan evaluates itself: literal on either side, every operator.
    "SELECT count(*) FROM events WHERE 0.5 > confidence AND duration_ms >= 100",
    "SELECT count(*) FROM events WHERE confidence <> 0.9 AND duration_ms <= 250.5",
    "SELECT count(*) FROM events WHERE confidence = 1 OR duration_ms > 1000 OR cost_usd <= 0",
    "SELECT count(*) FROM events WHERE confidence BETWEEN 0.2 AND 0.8 AND agent_id = 'support-agent-000'",
    "SELECT count(*) FROM events WHERE timestamp > '2025-06-01T00:01:10Z'",
    "SELECT count(*) FROM events WHERE timestamp >= '2025-06-01T00:00:50Z' AND timestamp < '2025-06-01T00:02:20Z'",
    "SELECT count(*) FROM events WHERE timestamp BETWEEN '2025-06-01T00:01:00Z' AND '2025-06-01T00:02:00Z'",
    "SELECT min(timestamp), max(timestamp) FROM events",
    "SELECT date_trunc('minute', timestamp) AS m, count(*) FROM events GROUP BY m ORDER BY m",
    "SELECT agent_id, avg(CASE WHEN status = 'error' THEN 1.0 ELSE 0.0 END) AS err FROM events GROUP BY agent_id ORDER BY agent_id",
    "SELECT model, sum(input_tokens), sum(output_tokens), round(sum(cost_usd), 6) FROM events WHERE model IS NOT NULL GROUP BY model ORDER BY model",
    "SELECT tenant, count(DISTINCT trace_id) FROM events GROUP BY tenant ORDER BY tenant",
    "SELECT DISTINCT agent_id, trace_id FROM events WHERE tenant = 'acme' ORDER BY agent_id, trace_id LIMIT 25",
    "SELECT count(*) FROM (SELECT tenant, agent_id, parent_span_id FROM events GROUP BY tenant, agent_id, parent_span_id)",
    // Group keys as codes and raw id bytes: nullable ids, several keys, keys beside aggregates.
    "SELECT parent_span_id, count(*) AS n FROM events GROUP BY parent_span_id ORDER BY n DESC, parent_span_id NULLS FIRST LIMIT 12",
    "SELECT trace_id, agent_id, min(timestamp) AS t, count(*) AS n FROM events WHERE tenant = 'acme' GROUP BY trace_id, agent_id ORDER BY t, trace_id LIMIT 15",
    "SELECT model, intent, round(avg(confidence), 6) AS c, sum(input_tokens) AS i FROM events GROUP BY model, intent ORDER BY model NULLS FIRST, intent NULLS FIRST",
    "SELECT span_id, kind, timestamp FROM events WHERE trace_id = (SELECT trace_id FROM events ORDER BY timestamp, span_id LIMIT 1) ORDER BY timestamp, span_id",
    "SELECT intent, count(*) AS n FROM events WHERE confidence < 0.5 GROUP BY intent ORDER BY n DESC, intent",
    "SELECT count(*) FROM events WHERE content LIKE '%refund%'",
    "SELECT count(*) FROM events WHERE content LIKE '%ORD-1%'",
    "SELECT count(*) FROM events WHERE content LIKE 'Let me%' AND content LIKE '%step%'",
    "SELECT count(*) FROM events WHERE content ILIKE '%REFUND%order%'",
    "SELECT count(*) FROM events WHERE content LIKE '%re_und%'",
    "SELECT count(*) FROM events WHERE content NOT LIKE '%refund%'",
    "SELECT count(*) FROM events WHERE content LIKE '%zzzz-no-such-word%'",
    "SELECT count(*) FROM events WHERE attributes['env'] = 'prod'",
    "SELECT attributes['retry'] AS r, count(*) FROM events GROUP BY r ORDER BY r",
    "SELECT span_id, timestamp FROM events ORDER BY timestamp DESC, span_id LIMIT 7",
    "SELECT agent_id, span_id, row_number() OVER (PARTITION BY agent_id ORDER BY timestamp, span_id) AS rn FROM events WHERE tenant = 'hooli' ORDER BY agent_id, rn LIMIT 30",
    "SELECT c.kind, p.kind AS parent_kind, count(*) FROM events c JOIN events p ON c.parent_span_id = p.span_id AND c.trace_id = p.trace_id GROUP BY c.kind, p.kind",
    "SELECT count(*) FROM events WHERE error_message LIKE 'Timeout%'",
    "SELECT kind, round(avg(duration_ms), 3), max(duration_ms) FROM events GROUP BY kind ORDER BY kind",
    "SELECT count(*) FROM events WHERE input_tokens > 4000 AND output_tokens < 100",
    "SELECT count(*) FROM events WHERE parent_span_id IS NULL",
    "SELECT session_id, count(*) FROM events WHERE tenant = 'stark' GROUP BY session_id ORDER BY 2 DESC, 1 LIMIT 5",
    "SELECT count(*) FROM events WHERE agent_id = 'no-such-agent'",
    "SELECT * FROM events WHERE tenant = 'nobody'",
    "SELECT tenant, trace_id, span_id, parent_span_id, agent_id, session_id, timestamp, kind, name, intent, confidence, duration_ms, status, error_message, model, input_tokens, output_tokens, cost_usd FROM events WHERE kind = 'tool_call' ORDER BY timestamp, span_id LIMIT 20",
    "SELECT approx_distinct(agent_id) FROM events",
    "SELECT count(*) FROM events WHERE kind IN ('thought', 'action') AND status = 'ok' AND tenant != 'acme' AND timestamp < '2025-06-01T00:02:15Z'",
    "SELECT count(*) FROM events WHERE status = 'error' AND intent IN ('refund', 'billing') AND confidence >= 0.9",
    "SELECT * FROM traces WHERE agent_id = 'support-agent-000' AND timestamp > '2024-01-01' AND events.semantics.intent = 'refund' AND events.semantics.confidence < 0.7 ORDER BY timestamp, events.span_id",
    // Time bounds that cover some blocks whole (their timestamps are not compared) and cut
    // others, beside a row filter and an index term.
    "SELECT intent, count(*) AS n FROM events WHERE timestamp >= '2025-06-01T00:01:45Z' AND confidence < 0.5 AND intent IS NOT NULL GROUP BY intent ORDER BY n DESC, intent",
    "SELECT span_id, timestamp FROM events WHERE timestamp BETWEEN '2025-06-01T00:00:40Z' AND '2025-06-01T00:02:50Z' AND duration_ms > 500 ORDER BY timestamp, span_id",
    "SELECT count(*) FROM events WHERE timestamp < '2025-06-01T00:03:00Z' AND timestamp > '2025-06-01T00:00:20Z' AND tenant = 'acme'",
    "SELECT count(*), min(timestamp), max(timestamp) FROM events WHERE timestamp >= '2025-06-01T00:01:00Z' AND timestamp <= '2025-06-01T00:03:20Z'",
    // A dictionary column and a UTC date_trunc as group keys, packed into one key: either
    // order, nullable columns, every granularity with an arithmetic path, filters and time
    // bounds that cut blocks, and one that is not packed (the calendar month).
    "SELECT agent_id, date_trunc('minute', timestamp) AS h, avg(CASE WHEN status = 'error' THEN 1.0 ELSE 0.0 END) AS e, count(*) FROM events WHERE tenant = 'acme' GROUP BY 1, 2",
    "SELECT date_trunc('second', timestamp) AS s, model, sum(input_tokens), count(cost_usd) FROM events GROUP BY 1, 2",
    "SELECT intent, date_trunc('week', timestamp) AS w, count(*), min(span_id) FROM events GROUP BY intent, w",
    "SELECT kind, date_trunc('day', timestamp), count(*) FROM events WHERE confidence < 0.6 AND timestamp > '2025-06-01T00:01:30Z' GROUP BY 1, 2",
    "SELECT date_trunc('millisecond', timestamp) AS ms, status, count(*) AS n FROM events GROUP BY 1, 2 ORDER BY n DESC, ms, status LIMIT 9",
    "SELECT date_trunc('hour', timestamp) AS h, intent FROM events WHERE intent IS NULL OR intent = 'refund' GROUP BY 1, 2",
    "SELECT model, date_trunc('month', timestamp) AS m, count(*) FROM events GROUP BY 1, 2",
    // Runtime filters (`query::runtime`): a scalar subquery's value, a hash join's key list
    // (short, and long enough for a hash lookup), TopK and min/max thresholds, on data in
    // segments and in memory.
    "SELECT span_id, kind FROM events WHERE trace_id = (SELECT max(trace_id) FROM events WHERE status = 'error') ORDER BY span_id",
    "SELECT count(*) FROM events WHERE trace_id = (SELECT max(trace_id) FROM events WHERE tenant = 'nobody')",
    "SELECT span_id FROM events WHERE timestamp = (SELECT max(timestamp) FROM events) ORDER BY span_id",
    "SELECT count(*) FROM events WHERE timestamp > (SELECT max(timestamp) FROM events) - INTERVAL '20 seconds' AND kind = 'thought'",
    "SELECT span_id, name FROM events WHERE agent_id = (SELECT min(agent_id) FROM events) AND name = (SELECT max(name) FROM events WHERE kind = 'tool_call') ORDER BY span_id",
    "SELECT e.span_id, e.name FROM events e JOIN (SELECT trace_id FROM events WHERE status = 'error' ORDER BY timestamp, span_id LIMIT 3) t ON e.trace_id = t.trace_id ORDER BY e.span_id",
    "SELECT count(*), min(span_id) FROM events WHERE trace_id IN (SELECT trace_id FROM events WHERE intent = 'refund' AND confidence < 0.3)",
    "SELECT count(*) FROM events e JOIN (SELECT DISTINCT name FROM events WHERE kind = 'tool_call' ORDER BY name LIMIT 2) n ON e.name = n.name",
    "SELECT c.span_id, p.name FROM events c JOIN events p ON c.parent_span_id = p.span_id WHERE c.agent_id = 'support-agent-000' AND c.status = 'error' ORDER BY c.span_id",
    "SELECT span_id, timestamp, content FROM events ORDER BY timestamp DESC, span_id LIMIT 5",
    "SELECT span_id, timestamp FROM events ORDER BY timestamp, span_id LIMIT 6",
    "SELECT span_id, duration_ms FROM events WHERE tenant = 'acme' ORDER BY duration_ms DESC NULLS LAST, span_id LIMIT 8",
    "SELECT span_id, intent FROM events ORDER BY intent NULLS FIRST, span_id DESC LIMIT 4",
    "SELECT max(timestamp), min(duration_ms), max(input_tokens) FROM events",
    "SELECT span_id, timestamp, kind FROM events WHERE confidence < 0.5 ORDER BY timestamp DESC, span_id LIMIT 5 OFFSET 3",
    "SELECT kind, timestamp FROM events WHERE tenant = 'acme' ORDER BY timestamp, kind, span_id LIMIT 11",
    "SELECT timestamp, events, agent_id FROM traces WHERE tenant = 'acme' ORDER BY timestamp DESC, events.span_id LIMIT 6",
];

/// The events of the suite in an engine: three flushed and compacted segments, two hot
/// ones, the rest in memory; our session over it and DataFusion's over a plain in-memory
/// table of the same events.
struct Fixture {
    _dir: tempfile::TempDir,
    engine: Arc<Engine>,
    events: Vec<Event>,
    ours: SessionContext,
    theirs: SessionContext,
}

async fn fixture() -> Fixture {
    fixture_with(Generator::new(11).take(30_000).collect()).await
}

/// An engine driven by hand (no background threads) with small blocks, so the suite's
/// events span many of them.
fn suite_engine() -> (tempfile::TempDir, Arc<Engine>) {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = EngineConfig {
        background: false,
        // Row groups of 2,000 rows: an archived segment of the suite spans several.
        archiver: Some(Arc::new(query::archive::ParquetArchiver { row_group_rows: 2_000 })),
        hot: segments::WriterOptions { block_rows: 1000, ..segments::WriterOptions::hot() },
        cold: segments::WriterOptions { block_rows: 3000, ..segments::WriterOptions::cold() },
        ..Default::default()
    };
    let (eng, _) = Engine::open(dir.path(), cfg).expect("open");
    (dir, Arc::new(eng))
}

/// DataFusion's own session over `events` as a plain in-memory table, with the `traces` view.
async fn baseline_session(events: &[Event]) -> SessionContext {
    let theirs = SessionContext::new();
    let table = MemTable::try_new(baseline_schema(), vec![vec![baseline_batch(events)]]).expect("mem");
    theirs.register_table("events", Arc::new(table)).expect("register");
    theirs.sql(query::TRACES_VIEW).await.expect("view").collect().await.expect("view");
    theirs
}

/// As `fixture`, over the given 30,000 events.
async fn fixture_with(events: Vec<Event>) -> Fixture {
    fixture_tiered(events, false).await
}

/// As `fixture_with`, with the warm segment (the first 15,000 events) moved to the cold tier
/// when `archived`: then the rows are in a Parquet file, hot segments and memory.
async fn fixture_tiered(events: Vec<Event>, archived: bool) -> Fixture {
    let (dir, eng) = suite_engine();
    for (i, chunk) in events.chunks(5000).enumerate() {
        eng.append(chunk.to_vec()).expect("append");
        if i < 5 {
            eng.flush().expect("flush");
        }
        if i == 2 {
            assert!(eng.compact().expect("compact"));
        }
    }
    let snap = eng.snapshot();
    assert!(snap.segments.len() >= 3 && !snap.memory.is_empty());
    // The compacted segment keeps its text in dictionary pages, so the queries read those.
    assert!(snap.segments.iter().any(|s| s.segment.has_text_dictionary()));
    if archived {
        assert_eq!(eng.archive_before(i64::MAX).expect("archive"), 15_000);
        let snap = eng.snapshot();
        assert_eq!(snap.archives.len(), 1);
        assert!(snap.segments.iter().all(|s| s.entry.tier == engine::Tier::Hot));
        assert_eq!(snap.rows(), events.len() as u64);
    }

    let ours = query::session(eng.clone(), None).await.expect("session");
    let theirs = baseline_session(&events).await;
    Fixture { _dir: dir, engine: eng, events, ours, theirs }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_matches_datafusion_memtable() {
    let Fixture { ours, theirs, .. } = fixture().await;
    let mut failures = Vec::new();
    for q in QUERIES {
        let a = render(&ours, q).await;
        let b = render(&theirs, q).await;
        if a != b {
            failures.push(format!(
                "{q}\n ours:   {:?}\n theirs: {:?}",
                a.map(|l| l.into_iter().take(8).collect::<Vec<_>>()),
                b.map(|l| l.into_iter().take(8).collect::<Vec<_>>())
            ));
        }
    }
    assert!(failures.is_empty(), "{} of {} queries differ:\n{}", failures.len(), QUERIES.len(), failures.join("\n"));
    assert!(QUERIES.len() >= 40);
}

/// Rows in the cold tier (a Parquet file of several row groups), hot segments and memory
/// answer every query of the suite, and a tenant's scope, as DataFusion does over the same
/// events; the archive file reads in DataFusion's own Parquet reader as the same rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archived_segments_match_datafusion_memtable() {
    let Fixture { _dir, engine, events, ours, theirs } =
        fixture_tiered(Generator::new(11).take(30_000).collect(), true).await;
    let mut failures = Vec::new();
    for q in QUERIES {
        compare(&ours, &theirs, q, &mut failures).await.ok();
    }
    // (Every query of the suite is valid: an error on both sides is a failure too.)
    assert!(failures.is_empty(), "{} of {} queries differ:\n{}", failures.len(), QUERIES.len(), failures.join("\n\n"));
    let scoped = query::session(engine.clone(), Some("acme".into())).await.expect("scoped");
    let q = "SELECT tenant, count(*), count(DISTINCT trace_id), sum(input_tokens) FROM events GROUP BY tenant";
    let scoped_rows = render(&scoped, q).await.expect("scoped query");
    let theirs_rows =
        render(&theirs, &q.replace("GROUP BY", "WHERE tenant = 'acme' GROUP BY")).await.expect("baseline");
    assert_eq!(scoped_rows, theirs_rows);
    // Row groups of the cold tier are skipped by their statistics (tenant: rows are ordered by
    // tenant in the file) and their trace_id bloom filters.
    use datafusion::prelude::{col, lit};
    let table = query::provider::EventsTable::new(engine.clone(), None);
    let archived_units = |filters: &[datafusion::logical_expr::Expr]| {
        let plan = table.plan(filters).expect("plan");
        plan.units.iter().filter(|u| matches!(u, query::provider::ScanUnit::Archive { .. })).count()
    };
    assert_eq!(archived_units(&[]), 8, "15,000 rows in row groups of 2,000");
    let acme = archived_units(&[col("tenant").eq(lit("acme"))]);
    assert!((1..8).contains(&acme), "{acme} row groups for one tenant");
    assert_eq!(archived_units(&[col("tenant").eq(lit("~no-such-tenant"))]), 0);
    let trace = hex(&events[7_000].trace_id);
    let lookup = archived_units(&[col("trace_id").eq(lit(trace.as_str()))]);
    assert!((1..=3).contains(&lookup), "{lookup} row groups for one trace");
    // The archive file as Parquet, read by DataFusion without our code: the first 15,000
    // events (the flushed chunks the compaction took).
    let file = engine.snapshot().archives[0].path.clone();
    let plain = SessionContext::new();
    plain
        .register_parquet("events", file.to_str().expect("utf-8 path"), Default::default())
        .await
        .expect("register parquet");
    let archived_theirs = baseline_session(&events[..15_000]).await;
    for q in [
        "SELECT count(*), count(DISTINCT trace_id), min(timestamp), max(timestamp), sum(input_tokens), sum(length(content)) FROM events",
        "SELECT kind, status, count(*), round(sum(confidence), 6), round(sum(cost_usd), 6) FROM events GROUP BY 1, 2 ORDER BY 1, 2",
        "SELECT span_id, parent_span_id, attributes['env'] FROM events ORDER BY span_id LIMIT 20",
    ] {
        let a = render(&plain, q).await;
        let b = render(&archived_theirs, q).await;
        assert_eq!(a, b, "{q}");
    }
}

/// Random predicates (see `random_predicates_match_datafusion_memtable`) over data partly in
/// the cold tier, unusual values included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_predicates_over_archived_rows_match_datafusion_memtable() {
    use rand::SeedableRng;
    let (runs, seed) = random_setting(200);
    let Fixture { events, ours, theirs, .. } = fixture_tiered(unusual_events(41 + seed), true).await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut failures = Vec::new();
    for n in 0..runs {
        let predicate = random_predicate(&mut rng, &events, 3);
        let q = match n % 3 {
            0 => format!(
                "SELECT count(*), count(intent), sum(input_tokens), min(timestamp), max(timestamp), round(sum(confidence), 6) FROM events WHERE {predicate}"
            ),
            1 => format!("SELECT span_id, timestamp, kind, content, attributes FROM events WHERE {predicate} ORDER BY timestamp, span_id LIMIT 7"),
            _ => format!("SELECT kind, status, count(*) FROM events WHERE {predicate} GROUP BY kind, status"),
        };
        compare(&ours, &theirs, &q, &mut failures).await.ok();
    }
    assert!(failures.is_empty(), "{} of {runs} queries differ:\n{}", failures.len(), failures.join("\n\n"));
}

/// Warm segments merged into one (size-tiered merging of compacted segments) answer every
/// query of the suite as DataFusion does over the same events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merged_warm_segments_match_datafusion_memtable() {
    let events: Vec<Event> = Generator::new(23).take(24_000).collect();
    let (_dir, eng) = suite_engine();
    for chunk in events.chunks(5000) {
        eng.append(chunk.to_vec()).expect("append");
        eng.flush().expect("flush");
        assert!(eng.compact().expect("compact the hot segment"));
    }
    assert_eq!(eng.snapshot().segments.len(), 5, "five warm segments");
    assert!(eng.compact().expect("merge"), "four of similar size are merged");
    assert_eq!(eng.stats().compactions_warm.load(std::sync::atomic::Ordering::Relaxed), 1);
    let rows: Vec<u64> = eng.snapshot().segments.iter().map(|s| s.segment.rows()).collect();
    assert_eq!(rows.len(), 2, "{rows:?}");
    let ours = query::session(eng.clone(), None).await.expect("session");
    let theirs = baseline_session(&events).await;
    let mut failures = Vec::new();
    for q in QUERIES {
        if render(&ours, q).await != render(&theirs, q).await {
            failures.push(*q);
        }
    }
    assert!(failures.is_empty(), "{} of {} queries differ: {failures:#?}", failures.len(), QUERIES.len());
}

/// Segments' value bitmaps and trace directories are loaded on demand into a budgeted cache:
/// with no budget (decoded again for every query) and with one that holds only some of them
/// (evicted and decoded again), every query gives what DataFusion gives, and the cache keeps
/// within its budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segment_indexes_decoded_again_give_the_same_answers() {
    let Fixture { engine, ours, theirs, .. } = fixture().await;
    let cache = query::segment_index_cache();
    let one = engine.snapshot().segments[0].segment.load_index().expect("index").memory_bytes();
    for budget in [0, one * 3 / 2] {
        cache.set_capacity(budget);
        cache.clear();
        let before = cache.stats().misses;
        let mut failures = Vec::new();
        for q in QUERIES {
            if render(&ours, q).await != render(&theirs, q).await {
                failures.push(*q);
            }
        }
        assert!(failures.is_empty(), "budget {budget}: {} queries differ: {failures:#?}", failures.len());
        let stats = cache.stats();
        assert!(stats.bytes <= budget, "{stats:?}");
        assert!(stats.misses - before > engine.snapshot().segments.len() as u64, "decoded again: {stats:?}");
    }
}

/// Lookups of one trace, answered without the planner (`query::point`), give what
/// DataFusion gives over the baseline table and over our own table through its planner:
/// traces in segments, in memory and across both, sorted on every column type and null
/// ordering, cut by LIMIT / OFFSET, empty, and in a tenant's scope.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn point_lookups_match_the_planner() {
    let Fixture { engine, events, ours, theirs, .. } = fixture().await;
    // Memory holds events 25,000 on; the trace of event 25,000 started before it.
    let across = events[25_000].trace_id;
    let before = events[..25_000].iter().filter(|e| e.trace_id == across).count();
    let after = events[25_000..].iter().filter(|e| e.trace_id == across).count();
    assert!(before > 0 && after > 0, "trace split {before} / {after}");
    let in_segments = events[7_000].trace_id;
    let in_memory = events[29_990].trace_id;
    assert!(events[..25_000].iter().all(|e| e.trace_id != in_memory));
    // The `traces` lookups sort by time alone: the traces' timestamps must be distinct.
    for t in [across, in_segments, in_memory] {
        let mut times: Vec<i64> = events.iter().filter(|e| e.trace_id == t).map(|e| e.timestamp_ns).collect();
        let n = times.len();
        times.sort_unstable();
        times.dedup();
        assert_eq!(times.len(), n, "a trace with repeated timestamps");
    }
    let mut queries = Vec::new();
    for t in [across, in_segments, in_memory].map(|t| hex(&t)) {
        queries.extend([
            format!("SELECT span_id, timestamp, kind, name, content FROM events WHERE trace_id = '{t}' ORDER BY timestamp, span_id"),
            format!("SELECT * FROM events WHERE trace_id = '{t}' ORDER BY timestamp DESC, span_id"),
            format!("select SPAN_ID, intent, confidence from EVENTS where '{t}' = trace_id order by intent nulls first, confidence desc, span_id limit 5 offset 2"),
            format!("SELECT span_id, model, input_tokens FROM events WHERE trace_id = '{t}' AND kind = 'llm_call' ORDER BY model, input_tokens DESC, span_id"),
            format!("SELECT span_id, model, intent FROM events WHERE trace_id = '{t}' ORDER BY model DESC, intent, span_id"),
            format!("SELECT span_id, model, intent FROM events WHERE trace_id = '{t}' ORDER BY intent DESC NULLS LAST, model NULLS FIRST, span_id DESC"),
            format!("SELECT parent_span_id, duration_ms, cost_usd FROM events WHERE trace_id = '{t}' ORDER BY parent_span_id DESC NULLS LAST, duration_ms, span_id"),
            format!("SELECT span_id, status, error_message, session_id, attributes FROM events WHERE trace_id = '{t}'"),
            format!("SELECT span_id FROM events WHERE trace_id = '{t}' ORDER BY timestamp LIMIT 3"),
            format!("SELECT span_id FROM events WHERE trace_id = '{t}' ORDER BY span_id OFFSET 4"),
            format!("SELECT span_id FROM events WHERE trace_id = '{t}' ORDER BY span_id LIMIT 4 OFFSET 1000"),
            format!("SELECT span_id FROM events WHERE trace_id = '{t}' LIMIT 0"),
            format!("SELECT span_id FROM events WHERE trace_id = '{t}' AND tenant = 'nobody' ORDER BY span_id"),
            // The `traces` view: its step struct assembled as the view lays it out.
            format!("SELECT * FROM traces WHERE trace_id = '{t}' ORDER BY timestamp DESC, agent_id"),
            format!("SELECT events, session_id FROM traces WHERE '{t}' = trace_id"),
            format!("SELECT timestamp, events FROM TRACES WHERE trace_id = '{t}' ORDER BY timestamp LIMIT 2 OFFSET 1"),
            format!("SELECT agent_id, events FROM traces WHERE trace_id = '{t}' AND tenant = 'nobody'"),
        ]);
    }
    queries.push(format!("SELECT span_id FROM events WHERE trace_id = '{}' ORDER BY span_id", "f".repeat(32)));
    let mut failures = Vec::new();
    for q in &queries {
        assert!(query::point::PointQuery::parse(q).is_some(), "not a point lookup: {q}");
        let fast = render(&ours, q).await;
        let planned = render_planned(&ours, q).await;
        let baseline = render(&theirs, q).await;
        if fast != baseline || fast != planned {
            failures.push(format!("{q}\n fast: {fast:?}\n planned: {planned:?}\n baseline: {baseline:?}"));
        }
    }
    // A tenant's session keeps to its tenant on this path too.
    let owner = events[7_000].tenant.clone();
    for tenant in [owner.as_str(), "nobody"] {
        let scoped = query::session(engine.clone(), Some(tenant.to_owned())).await.expect("session");
        let q = format!("SELECT tenant, span_id FROM events WHERE trace_id = '{}' ORDER BY span_id", hex(&in_segments));
        let fast = render(&scoped, &q).await;
        let planned = render_planned(&scoped, &q).await;
        if fast != planned {
            failures.push(format!("tenant {tenant}: {q}\n fast: {fast:?}\n planned: {planned:?}"));
        }
    }
    assert!(failures.is_empty(), "{} lookups differ:\n{}", failures.len(), failures.join("\n"));
}

/// The `output_rows` of each `events` scan in `sql`'s EXPLAIN ANALYZE, top to bottom, with
/// whether it shows runtime filters.
async fn scans_output(ctx: &SessionContext, sql: &str) -> Vec<(u64, bool)> {
    let batches = query::run_sql(ctx, &format!("EXPLAIN ANALYZE {sql}")).await.expect("explain");
    let text = arrow::util::pretty::pretty_format_batches(&batches).expect("text").to_string();
    text.lines()
        .filter(|l| l.contains("EventsScanExec"))
        .map(|l| {
            let rows = l
                .split("output_rows=")
                .nth(1)
                .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("no output_rows in {l}"));
            (rows, l.contains("runtime_filters="))
        })
        .collect()
}

/// Filters known only at run time skip rows inside the scan: the scan under a subquery's
/// value, a join's key list and a TopK emits about the rows the query needs, not all 30,000
/// (the answers themselves are checked in `provider_matches_datafusion_memtable`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_filters_skip_rows_in_the_scan() {
    let Fixture { events, ours, .. } = fixture().await;
    let last = events.iter().map(|e| e.trace_id).max().expect("events");
    let in_trace = events.iter().filter(|e| e.trace_id == last).count() as u64;
    // The main scan is listed first, the subquery's after it.
    let scans =
        scans_output(&ours, "SELECT span_id FROM events WHERE trace_id = (SELECT max(trace_id) FROM events)").await;
    assert_eq!(scans.first(), Some(&(in_trace, true)), "{scans:?}");
    // A join: the probe side (listed last) keeps the rows of the three build-side traces.
    let q = "SELECT e.span_id FROM events e JOIN (SELECT trace_id FROM events WHERE status = 'error' ORDER BY timestamp, span_id LIMIT 3) t ON e.trace_id = t.trace_id";
    let mut errors: Vec<&Event> = events.iter().filter(|e| e.status == "error").collect();
    errors.sort_by_key(|e| (e.timestamp_ns, hex(&e.span_id)));
    let traces: Vec<[u8; 16]> = errors.iter().take(3).map(|e| e.trace_id).collect();
    let want = events.iter().filter(|e| traces.contains(&e.trace_id)).count() as u64;
    let scans = scans_output(&ours, q).await;
    assert_eq!(scans.last(), Some(&(want, true)), "{scans:?}");
    // The newest five events: each partition reads its newest blocks first and stops
    // emitting rows once the TopK's threshold passes them (the buffer comes first).
    // Of the units read before that, each emits only its own five newest rows (and ties).
    let scans = scans_output(&ours, "SELECT span_id FROM events ORDER BY timestamp DESC LIMIT 5").await;
    assert!(matches!(scans.as_slice(), [(rows, true)] if *rows < 100), "{scans:?}");
    // EXPLAIN ANALYZE counts the units skipped whole.
    let batches = query::run_sql(&ours, "EXPLAIN ANALYZE SELECT span_id FROM events ORDER BY timestamp DESC LIMIT 5")
        .await
        .expect("explain");
    let text = arrow::util::pretty::pretty_format_batches(&batches).expect("text").to_string();
    let skipped: u64 = text
        .split("runtime_skipped_units=")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no runtime_skipped_units in {text}"));
    assert!(skipped > 5, "{text}");
    // The same through the `traces` view's projection.
    let scans = scans_output(&ours, "SELECT * FROM traces ORDER BY timestamp DESC LIMIT 5").await;
    assert!(matches!(scans.as_slice(), [(rows, true)] if *rows < 100), "{scans:?}");
}

/// A `LIKE` decodes a segment's token index only when the segment can hold matching rows:
/// not when an indexed condition rules it out. Then the index stays cached for the next one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_indexes_load_only_for_segments_a_search_reads() {
    let Fixture { engine, events, ours, .. } = fixture().await;
    let snap = engine.snapshot();
    let indexed: Vec<u64> =
        snap.segments.iter().filter(|s| s.segment.has_text_index()).map(|s| s.segment.uid()).collect();
    assert!(!indexed.is_empty(), "the compacted segment has a token index");
    let cache = query::text_index_cache();
    let count = |batches: &[arrow::array::RecordBatch]| {
        let b = query::schema::plain_batch(&batches[0]).expect("plain");
        b.column(0).as_any().downcast_ref::<arrow::array::Int64Array>().expect("count").value(0)
    };
    let none =
        query::run_sql(&ours, "SELECT count(*) AS n FROM events WHERE tenant = 'no-such' AND content LIKE '%refund%'")
            .await
            .expect("query");
    assert_eq!(count(&none), 0);
    assert!(indexed.iter().all(|uid| !cache.contains(uid)), "no segment holds the tenant: no index decoded");
    let want = events.iter().filter(|e| e.content.as_deref().is_some_and(|c| c.contains("refund"))).count() as i64;
    for round in 0..2 {
        let got = query::run_sql(&ours, "SELECT count(*) AS n FROM events WHERE content LIKE '%refund%'")
            .await
            .expect("query");
        assert_eq!(count(&got), want, "round {round}");
        assert!(
            indexed.iter().all(|uid| cache.contains(uid)),
            "round {round}: the searched segments' indexes are cached"
        );
    }
}

/// Text pages of compacted segments that a query decompressed are read from the text page
/// cache when a query needs them again, with the same answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_pages_read_again_come_from_the_cache() {
    let Fixture { events, ours, .. } = fixture().await;
    // Event 7,000 is in the compacted segment (events 0..15,000), whose text is paged.
    let trace = events[7_000].trace_id;
    let mut want: Vec<(String, Option<String>)> =
        events.iter().filter(|e| e.trace_id == trace).map(|e| (hex(&e.span_id), e.content.clone())).collect();
    want.sort();
    let sql = format!(
        "SELECT span_id, content FROM events WHERE trace_id = '{}' AND kind != 'nothing' ORDER BY span_id",
        hex(&trace)
    );
    let cache = query::text_page_cache();
    for round in 0..3 {
        let before = cache.stats();
        let batches = query::run_sql(&ours, &sql).await.expect("query");
        let after = cache.stats();
        let mut got = Vec::new();
        for b in &batches {
            let b = query::schema::plain_batch(b).expect("plain");
            let span = b.column(0).as_any().downcast_ref::<arrow::array::StringArray>().expect("span");
            let text = b.column(1).as_any().downcast_ref::<arrow::array::StringArray>().expect("content");
            for i in 0..b.num_rows() {
                got.push((
                    span.value(i).to_owned(),
                    (!arrow::array::Array::is_null(text, i)).then(|| text.value(i).to_owned()),
                ));
            }
        }
        assert_eq!(got, want, "round {round}");
        // Other tests share the process's cache: only this query's own effect is checked.
        if round == 0 {
            assert!(after.misses > before.misses, "{before:?} -> {after:?}");
        } else {
            assert!(after.hits > before.hits, "round {round}: {before:?} -> {after:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn indexed_and_time_predicates_prune_blocks() {
    let events: Vec<Event> = Generator::new(5).take(20_000).collect();
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = EngineConfig {
        background: false,
        hot: segments::WriterOptions { block_rows: 500, text_index: true, ..segments::WriterOptions::hot() },
        ..Default::default()
    };
    let (eng, _) = Engine::open(dir.path(), cfg).expect("open");
    let eng = Arc::new(eng);
    for chunk in events.chunks(4000) {
        eng.append(chunk.to_vec()).expect("append");
        eng.flush().expect("flush");
    }
    let table = Arc::new(query::EventsTable::new(eng.clone(), None));
    let ctx = SessionContext::new();
    ctx.register_table("t", table.clone()).expect("register");
    let plan_for = |sql: &str| {
        let df = futures_lite_block(ctx.sql(sql)).expect("plan");
        let filters = scan_filters(df);
        table.plan(&filters).expect("scan plan")
    };
    let all = plan_for("SELECT * FROM t");
    assert_eq!(all.stats.rows_kept, 20_000);
    // A rare agent: the bitmap keeps exactly its rows.
    let rare = &events
        .iter()
        .rev()
        .find(|e| e.agent_id.ends_with("039") || e.agent_id.ends_with("038"))
        .expect("rare")
        .agent_id;
    let want = events.iter().filter(|e| e.agent_id == rare).count() as u64;
    let p = plan_for(&format!("SELECT * FROM t WHERE agent_id = '{rare}'"));
    assert_eq!(p.stats.rows_kept, want);
    assert!(p.stats.blocks_kept < p.stats.blocks_total, "{:?}", p.stats);
    // A time window of a few seconds keeps a few blocks only.
    let mid = events[10_000].timestamp_ns;
    let lo = mid;
    let p = plan_for(&format!(
        "SELECT * FROM t WHERE timestamp >= to_timestamp_nanos({lo}) AND timestamp < to_timestamp_nanos({})",
        lo + 5_000_000_000
    ));
    assert!(p.stats.blocks_kept * 4 < p.stats.blocks_total, "{:?}", p.stats);
    // EXPLAIN shows the pruning.
    let session = query::session(eng.clone(), None).await.expect("session");
    let explain =
        query::run_sql(&session, &format!("EXPLAIN SELECT count(content) FROM events WHERE agent_id = '{rare}'"))
            .await
            .expect("explain");
    let text = arrow::util::pretty::pretty_format_batches(&explain).expect("fmt").to_string();
    let line = text.lines().find(|l| l.contains("EventsScanExec: segments=")).unwrap_or_else(|| panic!("{text}"));
    assert!(line.contains(&format!("rows={want}/20000")), "{line}");
    // A rare word in content: the token index keeps only the blocks that hold it, and the
    // scan counts exactly the rows that contain it.
    let word = events[12_345]
        .content
        .as_deref()
        .and_then(|c| c.split(|ch: char| !ch.is_alphanumeric() && ch != '-').find(|w| w.starts_with("ORD-")))
        .map(str::to_owned)
        .or_else(|| {
            events.iter().filter_map(|e| e.content.as_deref()).find_map(|c| {
                c.split(|ch: char| !ch.is_alphanumeric() && ch != '-')
                    .find(|w| w.starts_with("ORD-"))
                    .map(str::to_owned)
            })
        })
        .expect("an order number in the generated content");
    let want = events.iter().filter(|e| e.content.as_deref().is_some_and(|c| c.contains(&word))).count();
    let p = plan_for(&format!("SELECT count(*) FROM t WHERE content LIKE '%{word}%'"));
    assert!(p.stats.blocks_kept * 10 <= p.stats.blocks_total, "{word}: {:?}", p.stats);
    let got = query::run_sql(&session, &format!("SELECT count(*) AS n FROM events WHERE content LIKE '%{word}%'"))
        .await
        .expect("like");
    let got = arrow::util::pretty::pretty_format_batches(&got).expect("fmt").to_string();
    assert!(got.contains(&format!("| {want} ")), "{word}: want {want}\n{got}");
    // One trace by id.
    let tid = hex(&events[123].trace_id);
    let p = plan_for(&format!("SELECT * FROM t WHERE trace_id = '{tid}'"));
    assert_eq!(p.stats.rows_kept, events.iter().filter(|e| e.trace_id == events[123].trace_id).count() as u64);
}

fn futures_lite_block<F: std::future::Future>(f: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
}

/// The filters DataFusion pushes into the scan of `t`, read off the optimized plan.
fn scan_filters(df: datafusion::dataframe::DataFrame) -> Vec<datafusion::logical_expr::Expr> {
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    use datafusion::logical_expr::LogicalPlan;
    let plan = df.into_optimized_plan().expect("optimize");
    let mut out = Vec::new();
    let _ = plan.apply(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            out.extend(scan.filters.iter().cloned());
        }
        Ok(TreeNodeRecursion::Continue)
    });
    out
}

/// The generator's events with values it never makes: every nullable field null somewhere,
/// empty strings, LIKE's wildcards and quotes in text, Unicode, exact 0 and 1 confidences,
/// huge token counts, timestamps before 1970 and far ahead, and runs of equal timestamps
/// (so that block edges fall inside them).
fn unusual_events(seed: u64) -> Vec<Event> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut events: Vec<Event> = Generator::new(seed).take(30_000).collect();
    let odd_text = ["", "100% sure_thing", "it's \"quoted\"", "Zürich → 東京 🚀", "a\nb\tc", "%", "_"];
    for (i, e) in events.iter_mut().enumerate() {
        if rng.random_bool(0.04) {
            match rng.random_range(0..8) {
                0 => e.intent = None,
                1 => e.confidence = None,
                2 => e.model = None,
                3 => e.content = None,
                4 => e.session_id = None,
                5 => e.input_tokens = None,
                6 => e.duration_ms = None,
                _ => e.name = None,
            }
        }
        if rng.random_bool(0.01) {
            let t = odd_text[rng.random_range(0..odd_text.len())].to_owned();
            match rng.random_range(0..5) {
                0 => e.intent = Some(t.into()),
                1 => e.content = Some(t),
                2 => e.model = Some(t.into()),
                3 => e.name = Some(t.into()),
                _ => e.error_message = Some(t),
            }
        }
        if rng.random_bool(0.01) {
            e.confidence = Some(if rng.random_bool(0.5) { 0.0 } else { 1.0 });
        }
        if rng.random_bool(0.005) {
            e.input_tokens = Some((1 << 53) + 1);
        }
        if i % 997 == 0 {
            e.timestamp_ns = -86_400_000_000_123 * (1 + (i as i64 % 7));
        } else if i % 1_999 == 0 {
            e.timestamp_ns = 7_000_000_000_000_000_000 + i as i64;
        }
        // Runs of equal timestamps around block edges (hot blocks hold 1,000 rows).
        if (i % 1_000) > 995 || (i % 1_000) < 3 {
            e.timestamp_ns = (e.timestamp_ns / 1_000_000_000) * 1_000_000_000;
        }
    }
    events
}

/// Random predicates over every column type, composed with AND, OR and NOT, run on our
/// provider (indexes, time pruning, late materialization, the buffer) and on DataFusion's
/// own in-memory table: counts, sums, bounds and the first rows must agree. Literals are
/// drawn from the data itself (so predicates select something), from the block edges, and
/// from values that occur nowhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_predicates_match_datafusion_memtable() {
    use rand::SeedableRng;
    // AM_RANDOM_QUERIES=N[,SEED] runs more (CI runs 400 with seed 7).
    let (runs, seed) = random_setting(400);
    let Fixture { events, ours, theirs, .. } = fixture_with(unusual_events(23 + seed)).await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut failures = Vec::new();
    let mut nonzero = 0;
    for n in 0..runs {
        let mut predicate = random_predicate(&mut rng, &events, 3);
        // The `traces` view has no model, token, cost, error message or attribute columns.
        const NOT_IN_TRACES: [&str; 5] = ["model", "tokens", "cost_usd", "error_message", "attributes"];
        while n % 4 == 3 && NOT_IN_TRACES.iter().any(|c| predicate.contains(c)) {
            predicate = random_predicate(&mut rng, &events, 3);
        }
        let q = match n % 4 {
            0 => format!(
                "SELECT count(*), count(intent), sum(input_tokens), min(timestamp), max(timestamp), round(sum(confidence), 6) FROM events WHERE {predicate}"
            ),
            1 => format!("SELECT span_id, timestamp, kind, content FROM events WHERE {predicate} ORDER BY timestamp, span_id LIMIT 7"),
            // Every other one groups by a packed key (or, where the data's time span has too
            // many buckets for one, not).
            2 if n % 8 == 6 => format!(
                "SELECT intent, date_trunc('{}', timestamp) AS t, count(*), sum(input_tokens) FROM events WHERE {predicate} GROUP BY 1, 2",
                ["second", "hour", "day", "week"][(n / 8 % 4) as usize]
            ),
            2 => format!("SELECT kind, status, count(*) FROM events WHERE {predicate} GROUP BY kind, status"),
            _ => format!(
                "SELECT count(*) FROM traces WHERE {}",
                predicate
                    .replace("intent", "events.semantics.intent")
                    .replace("confidence", "events.semantics.confidence")
                    .replace("content", "events.content")
                    .replace("kind", "events.kind")
                    .replace("duration_ms", "events.duration_ms")
                    .replace("status", "events.status")
                    .replace("parent_span_id", "events.parent_span_id")
                    .replace("name", "events.name")
            ),
        };
        let a = compare(&ours, &theirs, &q, &mut failures).await;
        // The count query's one data line is its fourth (border, header, border, row).
        if n % 4 == 0 && a.as_ref().is_ok_and(|l| l.get(3).is_some_and(|row| !row.starts_with("| 0 "))) {
            nonzero += 1;
        }
    }
    assert!(failures.is_empty(), "{} of {runs} queries differ:\n{}", failures.len(), failures.join("\n\n"));
    // The predicates are not all empty: many select some rows.
    eprintln!("{nonzero} of {} counts were not zero", runs / 4);
    assert!(nonzero > runs / 16, "only {nonzero} of {} counts were not zero", runs / 4);
}

/// `AM_RANDOM_QUERIES=N[,SEED]`: how many random queries to run (`default` when unset) and
/// the seed (7).
fn random_setting(default: u64) -> (u64, u64) {
    let setting = std::env::var("AM_RANDOM_QUERIES").unwrap_or_default();
    let mut parts = setting.split(',').map(|p| p.trim().parse::<u64>().ok());
    (parts.next().flatten().unwrap_or(default), parts.next().flatten().unwrap_or(7))
}

/// Run `q` on both sessions; a difference, or an error on both sides (every drawn statement
/// is valid SQL), goes to `failures`. Our result is returned.
async fn compare(
    ours: &SessionContext,
    theirs: &SessionContext,
    q: &str,
    failures: &mut Vec<String>,
) -> Result<Vec<String>, String> {
    let a = render(ours, q).await;
    let b = render(theirs, q).await;
    if a != b {
        failures.push(format!("{q}\n ours:   {a:?}\n theirs: {b:?}"));
    } else if let Err(e) = &a {
        failures.push(format!("{q}\n failed on both: {e}"));
    }
    a
}

/// Random predicates under operators that push filters into the scan at run time: scalar
/// subqueries, IN subqueries and joins (hash join key lists), TopK on time and on other
/// columns, both directions and null orders. Each matches DataFusion over the plain table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_runtime_filters_match_datafusion_memtable() {
    use rand::{Rng, SeedableRng};
    // AM_RANDOM_QUERIES=N[,SEED] runs more here too (120 by default).
    let (runs, seed) = random_setting(120);
    let runs = runs.max(12);
    let Fixture { events, ours, theirs, .. } = fixture_with(unusual_events(41 + seed)).await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0x5eed);
    let mut failures = Vec::new();
    let mut rows_found = 0;
    for n in 0..runs {
        let p = random_predicate(&mut rng, &events, 2);
        let k = rng.random_range(1..40);
        let dir = if rng.random_bool(0.5) { "DESC" } else { "ASC" };
        let nulls = if rng.random_bool(0.5) { "NULLS FIRST" } else { "NULLS LAST" };
        let q = match n % 6 {
            0 => format!(
                "SELECT span_id, kind FROM events WHERE trace_id = (SELECT max(trace_id) FROM events WHERE {p}) ORDER BY span_id"
            ),
            1 => format!(
                "SELECT count(*), min(span_id), max(timestamp) FROM events WHERE trace_id IN (SELECT trace_id FROM events WHERE {p} ORDER BY timestamp, span_id LIMIT {k})"
            ),
            2 => format!("SELECT span_id, timestamp, content FROM events WHERE {p} ORDER BY timestamp {dir}, span_id LIMIT {k}"),
            3 => {
                let col = ["duration_ms", "confidence", "input_tokens", "agent_id", "name", "intent"][rng.random_range(0..6)];
                format!("SELECT span_id, {col} FROM events WHERE {p} ORDER BY {col} {dir} {nulls}, span_id LIMIT {k}")
            }
            4 => format!(
                "SELECT c.span_id, p.kind, p.name FROM (SELECT * FROM events WHERE {p}) c JOIN events p ON c.parent_span_id = p.span_id AND c.trace_id = p.trace_id"
            ),
            _ => format!(
                "SELECT count(*), min(span_id) FROM events WHERE timestamp >= (SELECT max(timestamp) FROM events WHERE {p}) - INTERVAL '3 seconds'"
            ),
        };
        let a = compare(&ours, &theirs, &q, &mut failures).await;
        // Rows beyond the table's borders and header (an empty result draws four lines).
        if n % 6 == 2 && a.as_ref().is_ok_and(|l| l.len() > 4) {
            rows_found += 1;
        }
    }
    assert!(failures.is_empty(), "{} of {runs} queries differ:\n{}", failures.len(), failures.join("\n\n"));
    // The TopK queries are not all empty.
    assert!(rows_found > runs / 24, "only {rows_found} of {} TopK results had rows", runs / 6);
}

fn sql_text(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn random_predicate(rng: &mut impl rand::Rng, events: &[Event], depth: u32) -> String {
    if depth > 0 && rng.random_bool(0.45) {
        let a = random_predicate(rng, events, depth - 1);
        let b = random_predicate(rng, events, depth - 1);
        return match rng.random_range(0..5) {
            0 | 1 => format!("({a} AND {b})"),
            2 | 3 => format!("({a} OR {b})"),
            _ => format!("NOT ({a})"),
        };
    }
    let e = &events[rng.random_range(0..events.len())];
    let other = &events[rng.random_range(0..events.len())];
    let string_column = |e: &Event, c: usize| -> (&'static str, Option<String>) {
        match c {
            0 => ("tenant", Some(e.tenant.to_string())),
            1 => ("agent_id", Some(e.agent_id.to_string())),
            2 => ("intent", e.intent.as_deref().map(str::to_owned)),
            3 => ("kind", Some(e.kind.to_string())),
            4 => ("status", Some(e.status.to_string())),
            5 => ("model", e.model.as_deref().map(str::to_owned)),
            6 => ("name", e.name.as_deref().map(str::to_owned)),
            _ => ("session_id", e.session_id.as_deref().map(str::to_owned)),
        }
    };
    let lit = |v: &Option<String>| v.as_deref().map_or("'no-such-value'".to_owned(), sql_text);
    match rng.random_range(0..12) {
        0..=2 => {
            let c = rng.random_range(0..8);
            let (col, v) = string_column(e, c);
            let (_, w) = string_column(other, c);
            match rng.random_range(0..8) {
                0 | 1 => format!("{col} = {}", lit(&v)),
                2 => format!("{col} <> {}", lit(&v)),
                3 => format!("{col} IN ({}, {}, 'no-such-value')", lit(&v), lit(&w)),
                4 => format!("{col} NOT IN ({}, {})", lit(&v), lit(&w)),
                5 => format!("{col} IS {}NULL", if rng.random_bool(0.5) { "NOT " } else { "" }),
                6 => format!("{col} > {}", lit(&v)),
                _ => format!("{col} LIKE {}", lit(&v.map(|s| format!("{}%", s.chars().take(3).collect::<String>())))),
            }
        }
        3..=5 => {
            // Timestamps of real rows (block edges included: every 1,000th event).
            let pick = |rng: &mut dyn rand::RngCore| {
                use rand::Rng;
                let i = if rng.random_bool(0.5) {
                    rng.random_range(0..30usize) * 1_000 + if rng.random_bool(0.5) { 0 } else { 999 }
                } else {
                    rng.random_range(0..events.len())
                };
                events[i.min(events.len() - 1)].timestamp_ns
            };
            let t = pick(rng);
            let u = pick(rng);
            let ts = |ns: i64| format!("'{}'", benches::chrono_free_rfc3339(ns));
            match rng.random_range(0..7) {
                0 => format!("timestamp > {}", ts(t)),
                1 => format!("timestamp >= {}", ts(t)),
                2 => format!("timestamp < {}", ts(t)),
                3 => format!("timestamp <= {}", ts(t)),
                4 => format!("timestamp = {}", ts(t)),
                5 => format!("timestamp BETWEEN {} AND {}", ts(t.min(u)), ts(t.max(u))),
                _ => format!("timestamp > to_timestamp_nanos({t}) AND timestamp < to_timestamp_nanos({u})"),
            }
        }
        6 | 7 => {
            let (col, v) = match rng.random_range(0..4) {
                0 => ("confidence", e.confidence),
                1 => ("duration_ms", e.duration_ms),
                2 => ("cost_usd", e.cost_usd),
                _ => ("CAST(input_tokens AS DOUBLE)", e.input_tokens.map(|v| v as f64)),
            };
            let v = v.unwrap_or(0.5);
            match rng.random_range(0..7) {
                0 => format!("{col} < {v:?}"),
                1 => format!("{col} >= {v:?}"),
                2 => format!("{col} = {v:?}"),
                3 => format!("{col} IS NULL"),
                4 => format!("{col} BETWEEN {:?} AND {:?}", v / 2.0, v),
                5 => format!("{col} * 2 > {v:?}"),
                _ => format!("{col} <> {v:?}"),
            }
        }
        8 => match rng.random_range(0..4) {
            0 => format!("input_tokens > {}", e.input_tokens.unwrap_or(100)),
            1 => format!("output_tokens <= {}", e.output_tokens.unwrap_or(100)),
            2 => "input_tokens % 2 = 0".to_owned(),
            _ => "output_tokens IS NOT NULL".to_owned(),
        },
        9 => {
            let word = e
                .content
                .as_deref()
                .and_then(|c| c.split_whitespace().nth(rng.random_range(0..6)))
                .unwrap_or("no-such-word")
                .to_owned();
            match rng.random_range(0..5) {
                0 => format!("content LIKE {}", sql_text(&format!("%{word}%"))),
                1 => format!("content NOT LIKE {}", sql_text(&format!("%{word}%"))),
                2 => format!("content ILIKE {}", sql_text(&format!("%{}%", word.to_uppercase()))),
                3 => format!("content LIKE {}", sql_text(&format!("{word}%"))),
                _ => "content IS NULL".to_owned(),
            }
        }
        10 => match rng.random_range(0..3) {
            0 => format!("trace_id = '{}'", hex(&e.trace_id)),
            1 => format!("trace_id IN ('{}', '{}')", hex(&e.trace_id), hex(&other.trace_id)),
            _ => format!("parent_span_id = '{}'", e.parent_span_id.map_or("0".repeat(16), |p| hex(&p))),
        },
        _ => match e.attributes.first() {
            Some((k, v)) if rng.random_bool(0.7) => format!("attributes[{}] = {}", sql_text(k), sql_text(v)),
            Some((k, _)) => format!("attributes[{}] IS NULL", sql_text(k)),
            None => "attributes['no-such-key'] IS NOT NULL".to_owned(),
        },
    }
}

/// Content carrying base64 payloads (screenshots, files) makes blocks whose long tokens would
/// be most of the token index; those blocks keep only their short tokens and stay candidates
/// for any piece that may lie in a longer one. Searches for pieces of a payload, for whole
/// long tokens and for short words give what DataFusion gives, in compacted and hot segments.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn searches_in_blocks_of_payloads_match_datafusion_memtable() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut events: Vec<Event> = Generator::new(31).take(30_000).collect();
    // Two runs of payload rows: one in the segment compaction writes, one in a hot segment.
    for i in (2_000..2_600).chain(21_000..21_400) {
        let payload: String = (0..8_000).map(|_| char::from(B64[rng.random_range(0..64)])).collect();
        events[i].content = Some(format!("screenshot data:image/png;base64,{payload} ref PAY{i}"));
    }
    let payload_of = |i: usize| {
        let c = events[i].content.as_deref().expect("payload");
        c.split(",").nth(1).expect("payload").split(' ').next().expect("payload").to_owned()
    };
    let (inner, long_token) = {
        let p = payload_of(2_100);
        let long = p.split(['+', '/']).max_by_key(|t| t.len()).expect("token").to_owned();
        (p[5_700..5_724].to_owned(), long)
    };
    let hot_inner = payload_of(21_111)[7_500..7_520].to_owned();
    assert!(long_token.len() > index::text::ALWAYS_INDEXED, "{long_token}");
    let Fixture { engine, ours, theirs, .. } = fixture_with(events).await;
    // Compaction writes the token index (hot segments have none).
    let partial: Vec<Vec<u32>> = engine
        .snapshot()
        .segments
        .iter()
        .filter_map(|s| s.segment.load_text_index().expect("text index"))
        .map(|t| t.partial_blocks().to_vec())
        .collect();
    assert_eq!(partial.len(), 1, "one compacted segment");
    // Compaction's order spreads the payload rows over its blocks.
    assert!(!partial[0].is_empty(), "blocks of payloads keep short tokens only");
    let queries = [
        format!("SELECT count(*) FROM events WHERE content LIKE '%{inner}%'"),
        format!("SELECT count(*) FROM events WHERE content LIKE '%{hot_inner}%'"),
        format!("SELECT count(*) FROM events WHERE content LIKE '%{long_token}%'"),
        format!("SELECT span_id FROM events WHERE content LIKE '%/{long_token}+%' OR content LIKE '%,{long_token}%' ORDER BY span_id"),
        "SELECT count(*) FROM events WHERE content LIKE '%PAY2100%'".to_owned(),
        "SELECT count(*) FROM events WHERE content LIKE '% PAY21111'".to_owned(),
        "SELECT count(*) FROM events WHERE content LIKE '%image/png%' AND content LIKE '%refund%'".to_owned(),
        "SELECT count(*) FROM events WHERE content LIKE '%refund%'".to_owned(),
        "SELECT count(*) FROM events WHERE content LIKE '%ORD-1%'".to_owned(),
    ];
    for q in &queries {
        assert_eq!(render(&ours, q).await, render(&theirs, q).await, "{q}");
    }
    let hits = render(&ours, &queries[0]).await.expect("count");
    assert!(hits.iter().any(|l| l.contains("| 1 ")), "the payload piece is found: {hits:?}");
}
