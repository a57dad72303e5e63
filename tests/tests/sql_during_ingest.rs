//! SQL while writers append and the background flushes and compacts: every query sees one
//! consistent state. No row twice (a batch in memory and in the segment it was flushed to, or
//! in hot segments and the compacted one that replaced them), none lost, counts that only
//! grow, and every acknowledged row visible to a query that starts after the acknowledgement.
//! Both scan paths are covered: decoding rows (`count(DISTINCT span_id)`) and the index-only
//! counts (`count(*) ... GROUP BY kind`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::AsArray;
use arrow::datatypes::Int64Type;
use benches::Generator;
use engine::{Engine, EngineConfig};
use segments::Event;

const WRITERS: usize = 2;
const BATCHES: usize = 60;
const BATCH: usize = 200;
const KIND_COUNTS: &str = "SELECT kind, count(*) FROM events GROUP BY kind";

fn int_column(batches: &[arrow::array::RecordBatch], column: usize) -> Vec<i64> {
    let mut out = Vec::new();
    for b in batches {
        let a = b.column(column).as_primitive::<Int64Type>();
        out.extend((0..a.len()).map(|i| a.value(i)));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_see_one_consistent_state_while_the_engine_flushes_and_compacts() {
    let events: Vec<Event> = Generator::new(31).take(WRITERS * BATCHES * BATCH).collect();
    let mut spans: Vec<[u8; 8]> = events.iter().map(|e| e.span_id).collect();
    spans.sort_unstable();
    spans.dedup();
    assert_eq!(spans.len(), events.len(), "the generator repeated a span id");

    let dir = tempfile::tempdir().expect("tmp");
    // Flushes and compactions are driven by a thread of the test, so that they surely happen
    // while the queries run (the background thread's timing depends on the machine).
    let cfg = EngineConfig {
        background: false,
        hot: segments::WriterOptions { block_rows: 256, ..segments::WriterOptions::hot() },
        cold: segments::WriterOptions { block_rows: 512, ..segments::WriterOptions::cold() },
        ..Default::default()
    };
    let (eng, _) = Engine::open(dir.path(), cfg).expect("open");
    let eng = Arc::new(eng);
    let ctx = query::session(eng.clone(), None).await.expect("session");

    let acked = Arc::new(AtomicU64::new(0));
    // Segments the maintenance thread has flushed; writers wait for the first halfway, so
    // that rows land both before and after a flush whatever the machine's speed.
    let flushed = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = events
        .chunks(BATCHES * BATCH)
        .map(|mine| {
            let (eng, acked, flushed, mine) = (eng.clone(), acked.clone(), flushed.clone(), mine.to_vec());
            std::thread::spawn(move || {
                for (i, batch) in mine.chunks(BATCH).enumerate() {
                    let deadline = std::time::Instant::now() + Duration::from_secs(60);
                    while i == BATCHES / 2
                        && flushed.load(Ordering::SeqCst) == 0
                        && std::time::Instant::now() < deadline
                    {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    eng.append(batch.to_vec()).expect("append");
                    acked.fetch_add(batch.len() as u64, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(1));
                }
            })
        })
        .collect();
    let writers_done = Arc::new(AtomicBool::new(false));
    let maintenance = {
        let (eng, flushed, writers_done) = (eng.clone(), flushed.clone(), writers_done.clone());
        std::thread::spawn(move || {
            let mut compactions = 0;
            for round in 0u64.. {
                let last = writers_done.load(Ordering::SeqCst);
                if eng.flush().expect("flush") {
                    flushed.fetch_add(1, Ordering::SeqCst);
                }
                if round % 3 == 2 || last {
                    compactions += u64::from(eng.compact().expect("compact"));
                }
                if last {
                    break;
                }
                std::thread::sleep(Duration::from_millis(3));
            }
            compactions
        })
    };

    let mut last_rows = 0;
    let mut last_kinds: BTreeMap<String, i64> = BTreeMap::new();
    let mut queries = 0;
    let mut plan_checked = false;
    loop {
        let done = maintenance.is_finished();
        if writers.iter().all(|w| w.is_finished()) {
            writers_done.store(true, Ordering::SeqCst);
        }
        let floor = acked.load(Ordering::SeqCst) as i64;
        let rows = query::run_sql(&ctx, "SELECT count(*), count(DISTINCT span_id) FROM events").await.expect("count");
        let (n, distinct) = (int_column(&rows, 0)[0], int_column(&rows, 1)[0]);
        assert_eq!(n, distinct, "a row is visible twice ({n} rows, {distinct} span ids)");
        assert!(n >= floor, "{n} rows visible after {floor} were acknowledged");
        assert!(n >= last_rows, "rows disappeared: {n} after {last_rows}");
        last_rows = n;

        if !plan_checked && n > 0 && n < events.len() as i64 {
            // The count per kind is answered from the bitmaps (no row scanned), the second
            // path this test checks, while rows are both buffered and in segments.
            let plan = query::run_sql(&ctx, &format!("EXPLAIN {KIND_COUNTS}")).await.expect("explain");
            let plan = arrow::util::pretty::pretty_format_batches(&plan).expect("plan").to_string();
            assert!(!plan.contains("EventsScanExec"), "counts per kind scan rows:\n{plan}");
            plan_checked = true;
        }
        let floor = acked.load(Ordering::SeqCst) as i64;
        let kinds = query::run_sql(&ctx, KIND_COUNTS).await.expect("kinds");
        let mut by_kind = BTreeMap::new();
        for b in &kinds {
            let names = arrow::compute::cast(b.column(0), &arrow::datatypes::DataType::Utf8).expect("cast");
            let names = names.as_string::<i32>();
            let counts = b.column(1).as_primitive::<Int64Type>();
            for i in 0..b.num_rows() {
                by_kind.insert(names.value(i).to_owned(), counts.value(i));
            }
        }
        let total: i64 = by_kind.values().sum();
        assert!(total >= floor, "index-only counts: {total} rows after {floor} were acknowledged");
        for (kind, c) in &last_kinds {
            let now = by_kind.get(kind).copied().unwrap_or(0);
            assert!(now >= *c, "kind {kind}: {now} rows after {c}");
        }
        last_kinds = by_kind;
        queries += 1;
        if done {
            break;
        }
    }
    for w in writers {
        w.join().expect("writer");
    }
    let compactions = maintenance.join().expect("maintenance");
    let flushes = flushed.load(Ordering::SeqCst);
    eprintln!("{queries} rounds of queries, {flushes} flushes, {compactions} compactions");
    assert!(
        flushes >= 2 && compactions >= 1,
        "{flushes} flushes and {compactions} compactions: too few to test against"
    );
    assert!(queries > 5 && plan_checked, "only {queries} rounds of queries ran");

    // The final state, counted independently.
    let mut want: BTreeMap<String, i64> = BTreeMap::new();
    for e in &events {
        *want.entry(e.kind.to_string()).or_default() += 1;
    }
    assert_eq!(last_kinds, want);
    assert_eq!(last_rows, events.len() as i64);
}
