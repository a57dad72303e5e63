//! sqllogictest-style files (`tests/slt/*.slt`) for the SQL behaviour people see: answers on the
//! contract's example events, errors for unknown columns and tables, type errors, empty results.
//!
//! Format: records separated by blank lines; `#` starts a comment line.
//!   `query` [`rowsort`], the SQL, `----`, then one line per row, cells separated by ` | `,
//!   NULL for nulls (`rowsort` compares sorted lines);
//!   `error <text>`, then the SQL: the statement must fail with a message containing <text>.
//! Set `SLT_PRINT=1` to print what the engine answers instead of checking.

use std::sync::Arc;

use arrow::util::display::{ArrayFormatter, FormatOptions};
use engine::{Engine, EngineConfig};

fn render(batches: &[arrow::array::RecordBatch]) -> Vec<String> {
    let opts = FormatOptions::default().with_null("NULL");
    let mut lines = Vec::new();
    for b in batches {
        let fmts: Vec<_> =
            b.columns().iter().map(|c| ArrayFormatter::try_new(c.as_ref(), &opts).expect("formatter")).collect();
        for r in 0..b.num_rows() {
            lines.push(fmts.iter().map(|f| f.value(r).to_string()).collect::<Vec<_>>().join(" | "));
        }
    }
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slt_files() {
    let dir = tempfile::tempdir().expect("tmp");
    let (engine, _) = Engine::open(dir.path(), EngineConfig { background: false, ..Default::default() }).expect("open");
    let text = include_str!("../data/example-events.jsonl");
    let lines: Vec<&str> = text.lines().collect();
    // Half in a segment, half in the in-memory buffer.
    engine.append_json(&lines[..6].join("\n")).expect("append");
    engine.flush().expect("flush");
    engine.append_json(&lines[6..].join("\n")).expect("append");
    let engine = Arc::new(engine);
    let ctx = query::session(engine, None).await.expect("session");
    let print = std::env::var("SLT_PRINT").is_ok();
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/slt");
    let mut files: Vec<_> = std::fs::read_dir(root).expect("slt dir").map(|e| e.expect("entry").path()).collect();
    files.sort();
    let mut checked = 0;
    for file in files {
        let body = std::fs::read_to_string(&file).expect("read slt");
        for record in body.split("\n\n").map(str::trim).filter(|r| !r.is_empty()) {
            let lines: Vec<&str> = record.lines().filter(|l| !l.starts_with('#')).collect();
            let Some((head, rest)) = lines.split_first() else { continue };
            let where_ = format!("{}: {head}", file.display());
            if let Some(expected_error) = head.strip_prefix("error ") {
                let sql = rest.join("\n");
                let got = match ctx.sql(&sql).await {
                    Ok(df) => df.collect().await.map(|_| ()),
                    Err(e) => Err(e),
                };
                let msg = got.err().map(|e| e.to_string()).unwrap_or_default();
                if print {
                    println!("error {msg}\n{sql}\n");
                } else {
                    assert!(
                        msg.contains(expected_error),
                        "{where_}\n{sql}\nexpected an error containing `{expected_error}`, got `{msg}`"
                    );
                }
            } else {
                let rowsort = *head == "query rowsort";
                assert!(rowsort || *head == "query", "{where_}: a record starts with `query` or `error`");
                let sep = rest.iter().position(|l| *l == "----").unwrap_or(rest.len());
                let sql = rest[..sep].join("\n");
                let mut expected: Vec<String> =
                    rest.get(sep + 1..).unwrap_or_default().iter().map(|s| s.to_string()).collect();
                let batches = ctx.sql(&sql).await.expect(&sql).collect().await.expect(&sql);
                let mut got = render(&batches);
                if print {
                    println!("{head}\n{sql}\n----\n{}\n", got.join("\n"));
                    continue;
                }
                if rowsort {
                    got.sort();
                    expected.sort();
                }
                assert_eq!(got, expected, "{where_}\n{sql}");
            }
            checked += 1;
        }
    }
    assert!(print || checked >= 10, "only {checked} records checked");
}

/// Filters the scan answers exactly (indexed equality, IN, IS NULL, trace ids through the
/// indexes; time, negations and other columns evaluated in the scan) leave no FilterExec
/// behind; what it cannot evaluate (volatile functions) is applied above it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_filters_are_not_reapplied() {
    let dir = tempfile::tempdir().expect("tmp");
    let (engine, _) = Engine::open(dir.path(), EngineConfig { background: false, ..Default::default() }).expect("open");
    engine.append_json(include_str!("../data/example-events.jsonl")).expect("append");
    engine.flush().expect("flush");
    let ctx = query::session(Arc::new(engine), None).await.expect("session");
    let plan = |sql: String| {
        let ctx = ctx.clone();
        async move {
            let batches = ctx.sql(&format!("EXPLAIN {sql}")).await.expect("plan").collect().await.expect("explain");
            render(&batches).join("\n")
        }
    };
    // Index-answered (first three) and scan-evaluated filters alike.
    for sql in [
        "SELECT count(content) FROM events WHERE agent_id = 'support-agent-026' AND intent IN ('escalation', 'x')",
        "SELECT count(content) FROM events WHERE model IS NULL",
        "SELECT count(content) FROM events WHERE trace_id = '0123456789abcdef0123456789abcdef'",
        "SELECT count(content) FROM events WHERE agent_id != 'support-agent-026'",
        "SELECT count(content) FROM events WHERE timestamp > '2025-06-03T12:00:00Z'",
        "SELECT count(content) FROM events WHERE confidence < 0.95 AND content LIKE '%a%'",
    ] {
        let p = plan(sql.to_owned()).await;
        assert!(!p.contains("FilterExec"), "{sql}\n{p}");
        assert!(p.contains("EventsScanExec"), "{sql}\n{p}");
    }
    let p = plan("SELECT count(*) FROM events WHERE confidence < random() + 1".to_owned()).await;
    assert!(p.contains("FilterExec"), "{p}");
    // And the exact answers: 6 of 7 acme steps have intent escalation; 5 events have no model.
    let n = |sql: &'static str| {
        let ctx = ctx.clone();
        async move { render(&ctx.sql(sql).await.expect("sql").collect().await.expect("run")) }
    };
    assert_eq!(
        n("SELECT count(*) FROM events WHERE agent_id = 'support-agent-026' AND intent IN ('escalation', 'x')").await,
        ["5"]
    );
    assert_eq!(n("SELECT count(*) FROM events WHERE model IS NULL").await, ["5"]);
    // Exact row counts reach the optimizer: a count under exact filters needs no aggregation.
    let p = plan("SELECT count(*) FROM events WHERE tenant = 'acme-corp'".to_owned()).await;
    assert!(!p.contains("AggregateExec") && !p.contains("EventsScanExec"), "{p}");
    assert_eq!(n("SELECT count(*) FROM events WHERE tenant = 'acme-corp'").await, ["7"]);
    assert_eq!(n("SELECT count(*) FROM events").await, ["12"]);
    // Not when the scan evaluates a filter row by row: its counts are only upper bounds.
    let p = plan("SELECT count(*) FROM events WHERE confidence < 0.95".to_owned()).await;
    assert!(p.contains("AggregateExec"), "{p}");
    assert_eq!(n("SELECT count(*) FROM events WHERE confidence < 0.95").await, ["4"]);
    assert_eq!(n("SELECT count(*) FROM events WHERE agent_id != 'support-agent-026'").await, ["5"]);
    assert_eq!(
        n("SELECT count(*) FROM events WHERE agent_id = 'support-agent-026' AND confidence < 0.95").await,
        ["1"]
    );
    // Min / max of timestamp and token counts come from block metadata: no scan needed.
    let sql = "SELECT min(timestamp) AS lo, max(timestamp) AS hi, min(input_tokens) AS a, max(output_tokens) AS b FROM events";
    let p = plan(sql.to_owned()).await;
    assert!(!p.contains("EventsScanExec"), "{p}");
    let mut ts: Vec<&str> = include_str!("../data/example-events.jsonl")
        .lines()
        .filter_map(|l| l.split("\"timestamp\":\"").nth(1)?.split('"').next())
        .collect();
    ts.sort_unstable();
    let got = n(sql).await.join(" ");
    assert!(got.contains(ts[0]) && got.contains(ts[ts.len() - 1]), "{got} vs {ts:?}");
    // Under a filter the bounds are not exact: the scan runs and the answer is still right.
    let p = plan("SELECT max(timestamp) FROM events WHERE confidence < 0.95".to_owned()).await;
    assert!(p.contains("EventsScanExec"), "{p}");
    // EXPLAIN ANALYZE shows both steps: rows the indexes kept, rows that left the scan.
    let analyzed = n("EXPLAIN ANALYZE SELECT count(content) FROM events WHERE confidence < 0.95").await.join("\n");
    let line = analyzed.lines().find(|l| l.contains("EventsScanExec")).unwrap_or_else(|| panic!("{analyzed}"));
    assert!(line.contains("rows=12/12") && line.contains("output_rows=4"), "{line}");
    // A limit pushed into a filtering scan counts the rows that passed, not those read.
    assert_eq!(n("SELECT count(*) FROM (SELECT span_id FROM events WHERE confidence < 0.95 LIMIT 3)").await, ["3"]);
    assert_eq!(n("SELECT count(*) FROM (SELECT span_id FROM events WHERE confidence < 0.95 LIMIT 10)").await, ["4"]);
}

/// `count(*)` grouped by indexed columns, under indexed filters only, is answered from the
/// bitmaps: no scan in the plan, and the counts equal those counted from the source file,
/// over segments and the in-memory buffer together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_counts_come_from_bitmaps() {
    let (_dir, ctx, rows) = example_session(true).await;
    let run = |sql: String| {
        let ctx = ctx.clone();
        async move { render(&ctx.sql(&sql).await.expect("sql").collect().await.expect("run")) }
    };
    // Independent answer: counted from the JSON.
    let count_by = |key: &str, tenant: Option<&str>| {
        let mut m: std::collections::BTreeMap<String, usize> = Default::default();
        for r in &rows {
            if tenant.is_some_and(|t| r["tenant"] != t) {
                continue;
            }
            let k = r[key].as_str().map_or("NULL".to_owned(), str::to_owned);
            *m.entry(k).or_default() += 1;
        }
        m.into_iter().map(|(k, n)| format!("{k} {n}")).collect::<Vec<_>>()
    };
    for (sql, key, tenant) in [
        ("SELECT kind, count(*) FROM events GROUP BY kind ORDER BY kind", "kind", None),
        (
            "SELECT intent, count(*) FROM events WHERE tenant = 'acme-corp' GROUP BY intent ORDER BY intent NULLS LAST",
            "intent",
            Some("acme-corp"),
        ),
    ] {
        let p = run(format!("EXPLAIN {sql}")).await.join("\n");
        assert!(!p.contains("EventsScanExec"), "{sql}\n{p}");
        let got: Vec<String> = run(sql.to_owned())
            .await
            .iter()
            .map(|l| l.replace(['|', ','], " ").split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        let mut got = got;
        got.sort();
        let mut want = count_by(key, tenant);
        want.sort();
        assert_eq!(got, want, "{sql}");
    }
    // A filter the indexes cannot answer keeps the ordinary scan.
    let p = run("EXPLAIN SELECT kind, count(*) FROM events WHERE confidence < 0.95 GROUP BY kind".to_owned())
        .await
        .join("\n");
    assert!(p.contains("EventsScanExec"), "{p}");
}

/// The example events in a fresh engine (all flushed into one segment, or with
/// `half_in_memory` the second half left in the in-memory buffer), a session over them, and
/// their JSON.
async fn example_session(
    half_in_memory: bool,
) -> (tempfile::TempDir, datafusion::prelude::SessionContext, Vec<serde_json::Value>) {
    let dir = tempfile::tempdir().expect("tmp");
    let (engine, _) = Engine::open(dir.path(), EngineConfig { background: false, ..Default::default() }).expect("open");
    let lines: Vec<&str> = include_str!("../data/example-events.jsonl").lines().collect();
    let (first, rest) = lines.split_at(if half_in_memory { lines.len() / 2 } else { lines.len() });
    engine.append_json(&first.join("\n")).expect("append");
    engine.flush().expect("flush");
    if !rest.is_empty() {
        engine.append_json(&rest.join("\n")).expect("append rest");
    }
    let ctx = query::session(Arc::new(engine), None).await.expect("session");
    let rows = lines.iter().map(|l| serde_json::from_str(l).expect("json")).collect();
    (dir, ctx, rows)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_queries_read_decoded_blocks_from_the_cache() {
    let (_dir, ctx, rows) = example_session(false).await;
    // Independent answer from the JSON: total duration and rows per agent with confidence set.
    let mut want: std::collections::BTreeMap<String, (usize, f64)> = Default::default();
    for r in rows.iter().filter(|r| !r["confidence"].is_null()) {
        let e = want.entry(r["agent_id"].as_str().expect("agent").to_owned()).or_default();
        e.0 += 1;
        e.1 += r["duration_ms"].as_f64().unwrap_or(0.0);
    }
    let sql = "SELECT agent_id, count(*) AS n, sum(coalesce(duration_ms, 0)) AS d FROM events \
               WHERE confidence IS NOT NULL GROUP BY agent_id ORDER BY agent_id";
    let cache = query::block_cache();
    for round in 0..3 {
        let before = cache.stats();
        let batches = ctx.sql(sql).await.expect("sql").collect().await.expect("run");
        let after = cache.stats();
        let mut got = Vec::new();
        for b in &batches {
            let b = query::schema::plain_batch(b).expect("plain");
            let agents = b.column(0).as_any().downcast_ref::<arrow::array::StringArray>().expect("agents");
            let n = b.column(1).as_any().downcast_ref::<arrow::array::Int64Array>().expect("n");
            let d = b.column(2).as_any().downcast_ref::<arrow::array::Float64Array>().expect("d");
            for i in 0..b.num_rows() {
                got.push((agents.value(i).to_owned(), n.value(i) as usize, d.value(i)));
            }
        }
        assert_eq!(got.len(), want.len(), "round {round}");
        for ((agent, n, d), (wa, (wn, wd))) in got.iter().zip(&want) {
            assert_eq!((agent, n), (wa, wn), "round {round}");
            assert!((d - wd).abs() < 1e-6 * wd.abs().max(1.0), "round {round}: {agent} {d} vs {wd}");
        }
        // Other tests share the process's cache, so only this query's own effect is checked:
        // the first round decodes (misses), later rounds find the blocks (hits).
        if round > 0 {
            assert!(after.hits >= before.hits + 3, "round {round}: {before:?} -> {after:?}");
        } else {
            assert!(after.misses >= before.misses + 3, "{before:?} -> {after:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dense_selections_evaluate_filters_only_where_they_can() {
    // One block: `model IS NULL` selects 5 of its 12 rows (dense), so the scan first tries
    // the row filter on every row of the block. Dividing by zero fails on the rows with
    // token counts, which the selection excludes: the scan must then filter the selected
    // rows alone, as SQL promises, instead of failing.
    let (_dir, ctx, rows) = example_session(false).await;
    let no_model = rows.iter().filter(|r| r["model"].is_null()).count();
    assert!(no_model * 4 >= rows.len() && no_model < rows.len(), "the data must give a dense, partial selection");
    assert!(rows.iter().filter(|r| r["model"].is_null()).all(|r| r["input_tokens"].is_null()));
    for (sql, want) in [
        ("SELECT count(*) FROM events WHERE model IS NULL AND input_tokens / (input_tokens - input_tokens) > 0", 0),
        (
            "SELECT count(*) FROM events WHERE model IS NULL AND coalesce(input_tokens / (input_tokens - input_tokens), 1) > 0",
            no_model,
        ),
    ] {
        let batches = ctx.sql(sql).await.expect("plan").collect().await.unwrap_or_else(|e| panic!("{sql}: {e}"));
        let n = batches[0].column(0).as_any().downcast_ref::<arrow::array::Int64Array>().expect("count").value(0);
        assert_eq!(n as usize, want, "{sql}");
    }
}

/// The text of `EXPLAIN sql`.
async fn explain(ctx: &datafusion::prelude::SessionContext, sql: &str) -> String {
    let plan = ctx.sql(&format!("EXPLAIN {sql}")).await.expect("plan").collect().await.expect("explain");
    arrow::util::pretty::pretty_format_batches(&plan).expect("fmt").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_keys_of_dictionary_columns_are_grouped_as_codes() {
    // Half the rows in a segment, half in memory: both kinds of unit give codes of one book.
    let (_dir, ctx, rows) = example_session(true).await;
    // Independent answer: rows and summed duration per (intent, kind), NULL intents included.
    let mut want: std::collections::BTreeMap<(String, String), (i64, f64)> = Default::default();
    for r in &rows {
        let intent = r["intent"].as_str().unwrap_or("NULL").to_owned();
        let e = want.entry((intent, r["kind"].as_str().expect("kind").to_owned())).or_default();
        e.0 += 1;
        e.1 += r["duration_ms"].as_f64().unwrap_or(0.0);
    }
    let sql = "SELECT coalesce(intent, 'NULL') AS i, kind, count(*) AS n, sum(coalesce(duration_ms, 0)) AS d \
               FROM events GROUP BY intent, kind";
    let plan = explain(&ctx, sql).await;
    assert!(plan.contains("decode_codes(intent") && plan.contains("decode_codes(kind"), "{plan}");
    let batches = ctx.sql(sql).await.expect("sql").collect().await.expect("run");
    let mut got: std::collections::BTreeMap<(String, String), (i64, f64)> = Default::default();
    for b in &batches {
        let b = query::schema::plain_batch(b).expect("plain");
        let s = |i: usize| b.column(i).as_any().downcast_ref::<arrow::array::StringArray>().expect("strings").clone();
        let (intents, kinds) = (s(0), s(1));
        let n = b.column(2).as_any().downcast_ref::<arrow::array::Int64Array>().expect("n");
        let d = b.column(3).as_any().downcast_ref::<arrow::array::Float64Array>().expect("d");
        for i in 0..b.num_rows() {
            got.insert((intents.value(i).to_owned(), kinds.value(i).to_owned()), (n.value(i), d.value(i)));
        }
    }
    assert_eq!(got.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>());
    for (k, (n, d)) in &got {
        let (wn, wd) = want[k];
        assert_eq!(*n, wn, "{k:?}");
        assert!((d - wd).abs() < 1e-6, "{k:?}: {d} vs {wd}");
    }
    // Trace ids group as their raw bytes and come back as the same hex strings.
    let sql = "SELECT tenant, trace_id, count(*) AS n FROM events GROUP BY tenant, trace_id";
    let plan = explain(&ctx, sql).await;
    assert!(plan.contains("decode_codes(trace_id"), "{plan}");
    let mut want: std::collections::BTreeMap<(String, String), i64> = Default::default();
    for r in &rows {
        let key = (r["tenant"].as_str().expect("tenant").to_owned(), r["trace_id"].as_str().expect("trace").to_owned());
        *want.entry(key).or_default() += 1;
    }
    let mut got: std::collections::BTreeMap<(String, String), i64> = Default::default();
    for b in ctx.sql(sql).await.expect("sql").collect().await.expect("run") {
        let b = query::schema::plain_batch(&b).expect("plain");
        let s = |i: usize| b.column(i).as_any().downcast_ref::<arrow::array::StringArray>().expect("strings").clone();
        let (tenants, traces) = (s(0), s(1));
        let n = b.column(2).as_any().downcast_ref::<arrow::array::Int64Array>().expect("n");
        for i in 0..b.num_rows() {
            got.insert((tenants.value(i).to_owned(), traces.value(i).to_owned()), n.value(i));
        }
    }
    assert_eq!(got, want);
    // A key that an aggregate also reads keeps its strings.
    let plan = explain(&ctx, "SELECT agent_id, max(agent_id) FROM events GROUP BY agent_id").await;
    assert!(!plan.contains("decode_codes"), "{plan}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dictionary_key_and_an_hour_group_as_one_packed_key() {
    // Half the rows in a segment, half in memory: the time bounds come from both.
    let (_dir, ctx, rows) = example_session(true).await;
    // Independent answer: rows per (agent, hour), the hour cut from the RFC 3339 text.
    let mut want: std::collections::BTreeMap<(String, String), i64> = Default::default();
    for r in &rows {
        let hour = format!("{}:00:00Z", &r["timestamp"].as_str().expect("timestamp")[..13]);
        *want.entry((r["agent_id"].as_str().expect("agent").to_owned(), hour)).or_default() += 1;
    }
    for sql in [
        "SELECT agent_id, to_char(date_trunc('hour', timestamp), '%Y-%m-%dT%H:%M:%SZ') AS h, count(*) AS n \
         FROM events GROUP BY agent_id, date_trunc('hour', timestamp)",
        "SELECT agent_id, to_char(h, '%Y-%m-%dT%H:%M:%SZ') AS h, n FROM \
         (SELECT date_trunc('hour', timestamp) AS h, agent_id, count(*) AS n FROM events GROUP BY 1, 2)",
    ] {
        let plan = explain(&ctx, sql).await;
        assert!(plan.contains("pack_key(agent_id@") && plan.contains("unpack_time(packed_key"), "{plan}");
        let mut got: std::collections::BTreeMap<(String, String), i64> = Default::default();
        for b in ctx.sql(sql).await.expect("sql").collect().await.expect("run") {
            let b = query::schema::plain_batch(&b).expect("plain");
            let s =
                |i: usize| b.column(i).as_any().downcast_ref::<arrow::array::StringArray>().expect("strings").clone();
            let (agents, hours) = (s(0), s(1));
            let n = b.column(2).as_any().downcast_ref::<arrow::array::Int64Array>().expect("n");
            for i in 0..b.num_rows() {
                got.insert((agents.value(i).to_owned(), hours.value(i).to_owned()), n.value(i));
            }
        }
        assert_eq!(got, want, "{sql}");
    }
    // A granularity of the calendar (months) is not packed.
    let plan =
        explain(&ctx, "SELECT agent_id, date_trunc('month', timestamp), count(*) FROM events GROUP BY 1, 2").await;
    assert!(!plan.contains("pack_key") && plan.contains("decode_codes(agent_id"), "{plan}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distinct_keys_leave_the_scan_once_per_run() {
    // One segment of 12 rows in time order: two traces whose steps follow each other. A GROUP
    // BY without aggregates over every scanned column needs each run of equal rows once.
    let (_dir, ctx, rows) = example_session(false).await;
    let traces: std::collections::BTreeSet<(String, String)> = rows
        .iter()
        .map(|r| (r["tenant"].as_str().expect("t").to_owned(), r["trace_id"].as_str().expect("id").to_owned()))
        .collect();
    let sql = "SELECT tenant, count(DISTINCT trace_id) AS n FROM events GROUP BY tenant ORDER BY tenant";
    let plan = ctx.sql(&format!("EXPLAIN ANALYZE {sql}")).await.expect("plan").collect().await.expect("analyze");
    let plan = arrow::util::pretty::pretty_format_batches(&plan).expect("fmt").to_string();
    let scan = plan.lines().find(|l| l.contains("EventsScanExec")).unwrap_or_else(|| panic!("{plan}"));
    assert!(scan.contains(&format!("output_rows={}", traces.len())), "{scan}");
    let got = render(&ctx.sql(sql).await.expect("sql").collect().await.expect("run"));
    let mut want: std::collections::BTreeMap<&str, usize> = Default::default();
    for (t, _) in &traces {
        *want.entry(t.as_str()).or_default() += 1;
    }
    let want: Vec<String> = want.iter().map(|(t, n)| format!("{t} | {n}")).collect();
    assert_eq!(got, want);
}
