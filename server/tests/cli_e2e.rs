//! The offline commands end to end: import (with a bad line), sql in every format, and export
//! to Hive-style Parquet read back by DataFusion and compared with the source rows.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_activemirror"))
}

/// `activemirror sql QUERY --format json` over `data`: the parsed JSON array.
fn sql_json(data: &std::path::Path, query: &str) -> serde_json::Value {
    let out = bin().args(["sql", query, "--format", "json", "--data-dir"]).arg(data).output().expect("sql");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("json")
}

fn example() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/contract/example-events.jsonl");
    std::fs::read_to_string(path).unwrap_or_else(|_| {
        (0..12)
            .map(|i| format!(r#"{{"tenant":"t{}","trace_id":"{:032x}","span_id":"{:016x}","agent_id":"a","timestamp":"2025-06-0{}T10:00:00Z","kind":"thought"}}"#, i % 2, 1, i + 1, 1 + i % 3))
            .collect::<Vec<_>>()
            .join("\n")
    })
}

#[test]
fn import_sql_export_roundtrip() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    let src = dir.path().join("events.jsonl");
    let text = example().trim_end().to_owned();
    let n = text.lines().filter(|l| !l.trim().is_empty()).count();
    // A bad line after the good ones: the import stops there, naming line and field.
    std::fs::write(&src, format!("{text}\n{{\"trace_id\":\"xyz\"}}\n")).expect("w");
    let out = bin().args(["import"]).arg(&src).arg("--data-dir").arg(&data).output().expect("import");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("line {}", n + 1)) && err.contains("trace_id"), "{err}");

    let v = sql_json(&data, "SELECT count(*) AS n FROM events");
    assert_eq!(v[0]["n"].as_u64(), Some(n as u64), "events before the bad line stay stored");

    let out = bin()
        .args([
            "sql",
            "SELECT tenant, count(*) AS n FROM events GROUP BY tenant ORDER BY tenant",
            "--format",
            "csv",
            "--data-dir",
        ])
        .arg(&data)
        .output()
        .expect("sql");
    let csv = String::from_utf8_lossy(&out.stdout);
    assert!(csv.starts_with("tenant,n\n"), "{csv}");
    // Full DataFusion SQL locally, COPY included: the file it writes reads back with the rows.
    let copied = dir.path().join("by-tenant.parquet");
    let copy = format!("COPY (SELECT tenant, count(*) AS n FROM events GROUP BY tenant) TO '{}'", copied.display());
    let out = bin().args(["sql", &copy, "--data-dir"]).arg(&data).output().expect("copy");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let back = tokio::runtime::Runtime::new().expect("rt").block_on(async {
        let ctx = datafusion::prelude::SessionContext::new();
        let df = ctx.read_parquet(copied.to_string_lossy().as_ref(), Default::default()).await.expect("read copy");
        df.aggregate(vec![], vec![datafusion::functions_aggregate::expr_fn::sum(datafusion::prelude::col("n"))])
            .expect("sum")
            .collect()
            .await
            .expect("collect")
    });
    let total = arrow::util::pretty::pretty_format_batches(&back).expect("fmt").to_string();
    assert!(total.contains(&format!("| {n} ")), "the copied counts add up to {n}: {total}");
    let v = sql_json(&data, "SELECT timestamp FROM events ORDER BY timestamp LIMIT 1");
    let ts = v[0]["timestamp"].as_str().expect("timestamp string");
    assert!(ts.ends_with('Z') || ts.ends_with("+00:00"), "{ts}");

    let export = dir.path().join("export");
    let out = bin().args(["export", "--out"]).arg(&export).arg("--data-dir").arg(&data).output().expect("export");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Hive-style folders.
    let tenants: Vec<String> = std::fs::read_dir(&export)
        .expect("out")
        .map(|e| e.expect("e").file_name().to_string_lossy().into_owned())
        .collect();
    assert!(tenants.iter().all(|t| t.starts_with("tenant=")), "{tenants:?}");
    let first = export.join(&tenants[0]);
    let dates: Vec<String> = std::fs::read_dir(&first)
        .expect("dates")
        .map(|e| e.expect("e").file_name().to_string_lossy().into_owned())
        .collect();
    assert!(dates.iter().all(|d| d.starts_with("date=") && d.len() == "date=2025-06-03".len()), "{dates:?}");

    // The summary names the rows, the files and their bytes as written.
    let files = walk_parquet(&export);
    let bytes: u64 = files.iter().map(|f| std::fs::metadata(f).expect("size").len()).sum();
    let summary = String::from_utf8_lossy(&out.stderr);
    assert!(summary.contains(&format!("exported {n} rows to ")), "{summary}");
    assert!(summary.contains(&format!("({} Parquet files, ", files.len())), "{summary}");
    assert!(summary.contains(&format!("{}", indicatif::HumanBytes(bytes))), "{summary}");
    // The files carry plain string types (no Utf8View) for readers without view support.
    let file = walk_parquet(&export).into_iter().next().expect("a parquet file");
    let reader = datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
        std::fs::File::open(&file).expect("open"),
    )
    .expect("parquet");
    let kind = reader.schema().field_with_name("kind").expect("kind").data_type().clone();
    assert_eq!(kind, arrow::datatypes::DataType::Utf8);

    // Read back with DataFusion and compare with the source.
    let rt = tokio::runtime::Runtime::new().expect("rt");
    rt.block_on(async {
        let ctx = datafusion::prelude::SessionContext::new();
        ctx.register_parquet("x", &format!("{}/", export.display()), Default::default()).await.expect("register");
        let batches = ctx
            .sql("SELECT count(*) AS n, count(DISTINCT span_id) AS s, min(timestamp) AS t FROM x")
            .await
            .expect("sql")
            .collect()
            .await
            .expect("collect");
        let text = arrow::util::pretty::pretty_format_batches(&batches).expect("fmt").to_string();
        assert!(text.contains(&format!("| {n} ")), "{text}");
        let types = ctx
            .sql("SELECT arrow_typeof(timestamp) AS t, arrow_typeof(attributes) AS a FROM x LIMIT 1")
            .await
            .expect("sql")
            .collect()
            .await
            .expect("c");
        let text = arrow::util::pretty::pretty_format_batches(&types).expect("fmt").to_string();
        assert!(
            text.contains("Timestamp(ns, \"UTC\")") || text.contains("Timestamp(Nanosecond, Some(\"UTC\"))"),
            "{text}"
        );
        assert!(text.contains("Map"), "{text}");
    });
}

/// Stdin, a byte order mark, Windows line breaks and blank lines: every event is stored, and a
/// line that is not UTF-8 stops the import naming its line, with the events before it kept.
#[test]
fn import_from_stdin_with_crlf_blank_lines_and_bad_bytes() {
    use std::io::Write;
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    let line = |i: u32| {
        format!(
            r#"{{"tenant":"s","trace_id":"{i:032x}","span_id":"{i:016x}","agent_id":"a","timestamp_ns":{},"kind":"thought","content":"step {i}"}}"#,
            1_750_000_000_000_000_000u64 + u64::from(i)
        )
    };
    // Starting with a byte order mark, as Windows tools write files: not part of line 1.
    let mut input = b"\xEF\xBB\xBF".to_vec();
    for i in 1..=5 {
        input.extend_from_slice(format!("{}\r\n\r\n", line(i)).as_bytes());
    }
    // Line 11: invalid UTF-8 inside a string.
    input.extend_from_slice(b"{\"tenant\":\"s\xff\"}\n");
    input.extend_from_slice(line(6).as_bytes());
    let mut child = bin()
        .args(["import", "-", "--data-dir"])
        .arg(&data)
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("import");
    child.stdin.take().expect("stdin").write_all(&input).expect("write");
    let out = child.wait_with_output().expect("wait");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 11") && err.contains("UTF-8") && err.contains("5 events before it"), "{err}");
    let v = sql_json(&data, "SELECT count(*) AS n, min(content) AS lo FROM events");
    assert_eq!(v[0]["n"].as_u64(), Some(5));
    assert_eq!(v[0]["lo"].as_str(), Some("step 1"));
}

fn walk_parquet(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("read dir").flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk_parquet(&p));
        } else if p.extension().is_some_and(|x| x == "parquet") {
            out.push(p);
        }
    }
    out
}

/// `sql --server` prints the same table, CSV and JSON as a local run over the same data (with
/// the columns of an empty result), a
/// result larger than the HTTP client's default 10 MB body limit arrives whole, and a reader
/// that closes the pipe early (`| head`) ends the command quietly, without a panic.
#[test]
fn sql_over_the_server_prints_what_a_local_run_prints() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    let text = example();
    let n = text.lines().filter(|l| !l.trim().is_empty()).count();
    let queries = [
        "SELECT tenant, count(*) AS n, min(timestamp) AS first FROM events GROUP BY tenant ORDER BY tenant",
        "SELECT span_id, kind, attributes, confidence FROM events ORDER BY span_id",
        "SELECT * FROM traces ORDER BY events.span_id",
        // No rows: still the columns (the planner's path and the point-lookup path).
        "SELECT tenant, kind FROM events WHERE tenant = 'nobody'",
        "SELECT span_id, kind FROM events WHERE trace_id = '00000000000000000000000000000000' ORDER BY span_id",
    ];
    let run = |args: &[&str]| {
        let out = bin().args(args).output().expect("sql");
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).expect("utf8")
    };
    let mut remote = Vec::new();
    {
        let server = common::start(&data);
        let (status, body) = common::post(&format!("{}/v1/events", server.base), &text);
        assert_eq!(status, 200, "{body}");
        for q in queries {
            for f in ["table", "csv", "json"] {
                remote.push(run(&["sql", q, "--format", f, "--server", &server.base]));
            }
        }
        // 6 rows of 2 MB each: 12 MB of JSON.
        let big = run(&[
            "sql",
            "SELECT repeat('x', 2000000) AS s FROM generate_series(1, 6)",
            "--format",
            "json",
            "--server",
            &server.base,
        ]);
        let v: serde_json::Value = serde_json::from_str(&big).expect("json");
        let rows = v.as_array().expect("array");
        assert_eq!(rows.len(), 6);
        assert!(rows.iter().all(|r| r["s"].as_str().map(str::len) == Some(2_000_000)));
    }
    let data_arg = data.to_string_lossy().into_owned();
    let mut local = Vec::new();
    for q in queries {
        for f in ["table", "csv", "json"] {
            local.push(run(&["sql", q, "--format", f, "--data-dir", &data_arg]));
        }
    }
    assert!(local[0].contains("| tenant") && local[0].contains("+--"), "{}", local[0]);
    let counted: usize = local[1].lines().skip(1).filter_map(|l| l.split(',').nth(1)?.parse::<usize>().ok()).sum();
    assert_eq!(counted, n, "{}", local[1]);
    // CSV has no nested values: a map or struct is a column of JSON text, equal to the JSON
    // output's value for that row.
    let csv_rows = |text: &str| -> Vec<Vec<String>> {
        let mut rows = Vec::new();
        let mut reader = csv_records(text);
        for r in reader.by_ref() {
            if r != [""] {
                rows.push(r);
            }
        }
        rows
    };
    for q in [1, 2] {
        let rows = csv_rows(&local[q * 3 + 1]);
        let json: serde_json::Value = serde_json::from_str(&local[q * 3 + 2]).expect("json");
        let col = if q == 1 { "attributes" } else { "events" };
        let at = rows[0].iter().position(|h| h == col).expect("column in the header");
        assert_eq!(rows.len() - 1, n, "{}", local[q * 3 + 1]);
        for (row, obj) in rows[1..].iter().zip(json.as_array().expect("array")) {
            let cell: serde_json::Value = serde_json::from_str(&row[at]).expect("a JSON cell");
            assert_eq!(cell, obj[col]);
        }
    }
    for (q, header) in [(3, "tenant"), (4, "span_id")] {
        assert!(local[q * 3].contains(&format!("| {header}")), "{}", local[q * 3]);
        assert!(local[q * 3 + 1].starts_with(&format!("{header},")), "{}", local[q * 3 + 1]);
        assert_eq!(local[q * 3 + 2].trim(), "[]");
    }
    for (i, (l, r)) in local.iter().zip(&remote).enumerate() {
        if i % 3 == 2 {
            // JSON: the same values; the server's output is compact.
            let l: serde_json::Value = serde_json::from_str(l).expect("local json");
            let r: serde_json::Value = serde_json::from_str(r).expect("remote json");
            assert_eq!(l, r, "query {}", i / 3);
        } else {
            assert_eq!(l, r, "query {}, format {}", i / 3, ["table", "csv"][i % 3]);
        }
    }

    // About 20 MB of output, of which the reader takes 16 bytes and leaves.
    let mut child = bin()
        .args(["sql", "SELECT repeat('y', 100000) AS s FROM generate_series(1, 200)", "--format", "csv"])
        .arg("--data-dir")
        .arg(&data)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut head = [0u8; 16];
    child.stdout.take().expect("stdout").read_exact(&mut head).expect("read");
    let out = child.wait_with_output().expect("wait");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && !err.contains("panicked"), "{:?}: {err}", out.status);
}

/// Minimal RFC 4180 reader for the test: quoted fields with doubled quotes and line breaks.
fn csv_records(text: &str) -> impl Iterator<Item = Vec<String>> + '_ {
    let mut chars = text.chars().peekable();
    std::iter::from_fn(move || {
        chars.peek()?;
        let (mut row, mut field, mut quoted) = (Vec::new(), String::new(), false);
        while let Some(c) = chars.next() {
            match (c, quoted) {
                ('"', true) if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                ('"', _) => quoted = !quoted,
                (',', false) => row.push(std::mem::take(&mut field)),
                ('\n', false) => break,
                (c, _) => field.push(c),
            }
        }
        row.push(field);
        Some(row)
    })
}

/// Errors name what is wrong once, with the underlying reason, and no panic or backtrace.
#[test]
fn errors_name_the_problem_once() {
    let dir = tempfile::tempdir().expect("tmp");
    let missing = dir.path().join("missing.jsonl");
    let out = bin().arg("import").arg(&missing).arg("--data-dir").arg(dir.path().join("d")).output().expect("import");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("missing.jsonl") && err.contains("No such file"), "{err}");
    let out = bin()
        .args(["sql", "SELECT nope FROM events", "--data-dir"])
        .arg(dir.path().join("d"))
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("sql");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(err.matches("No field named nope").count(), 1, "{err}");
    assert!(!err.contains("backtrace") && !err.contains("panicked"), "{err}");
    // A mistyped data directory is an error, and is not created.
    let typo = dir.path().join("typo");
    for args in [&["sql", "SELECT 1", "--data-dir"][..], &["export", "--out", "x", "--data-dir"][..]] {
        let out = bin().args(args).arg(&typo).output().expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains("does not exist"), "{args:?}: {err}");
        assert!(!typo.exists());
    }
}

/// Values real traffic has and a tidy generator does not: every one is stored and read back
/// exactly through `import` and `sql --format json`. The expected values are written down
/// here, not computed by our code (timestamps by hand from the calendar).
#[test]
fn import_keeps_unusual_values_exactly() {
    use serde_json::{json, Value};
    let times: [(Value, i64); 7] = [
        (json!("1969-12-31T23:59:59.5Z"), -500_000_000),
        (json!("2024-02-29T23:30:00-01:00"), 1_709_253_000_000_000_000),
        (json!("2191-12-31T23:59:59.123456789+05:30"), 7_005_637_799_123_456_789),
        (json!("1970-01-01T00:00:00+00:00"), 0),
        (json!("2025-06-03T10:00:00.000001Z"), 1_748_944_800_000_001_000),
        (json!("1900-01-01T00:00:00Z"), -2_208_988_800_000_000_000),
        (json!(1_700_000_000_123_456_789i64), 1_700_000_000_123_456_789),
    ];
    let texts = [
        Some("NUL\u{0}inside, tab\there, new\nline, \"quotes\", back\\slash".to_owned()),
        Some("日本語 café 😀 Ω straße".to_owned()),
        Some(String::new()),
        None,
        Some("x".repeat(70_000) + " tail"),
        Some("%_ like metacharacters _%".to_owned()),
    ];
    let tenants = [None, Some("ünïcode"), Some("with space"), Some("a/b=c%")];
    let mut lines = Vec::new();
    let mut expected = std::collections::BTreeMap::new();
    for i in 0..120usize {
        let span = format!("{:016x}", 0x1000 + i);
        let (ts, ns) = &times[i % times.len()];
        let tenant = tenants[i % tenants.len()];
        let text = texts[i % texts.len()].clone();
        let attrs: serde_json::Map<String, Value> = match i % 3 {
            0 => serde_json::Map::new(),
            1 => [("".to_owned(), json!("empty key")), ("ключ".to_owned(), json!("значение"))].into_iter().collect(),
            _ => [("k".to_owned(), json!("v".repeat(i)))].into_iter().collect(),
        };
        let tokens = [Some(0i64), Some(9_007_199_254_740_993), Some(-5), None][i % 4];
        let confidence = [Some(0.0), Some(1.0), Some(0.123456789012345), None][i % 4];
        let kind = ["thought", "Custom-Kind", "tool_call"][i % 3];
        let mut e = json!({
            "trace_id": format!("{:032x}", i % 7),
            "span_id": span,
            "agent_id": "agent Ω",
            "kind": kind,
            "content": text,
            "input_tokens": tokens,
            "confidence": confidence,
            "attributes": attrs,
        });
        e[if ts.is_string() { "timestamp" } else { "timestamp_ns" }] = ts.clone();
        if let Some(t) = tenant {
            e["tenant"] = json!(t);
        }
        lines.push(e.to_string());
        expected.insert(
            span,
            json!({
                "tenant": tenant.unwrap_or("default"),
                "ns": ns,
                "content": texts[i % texts.len()],
                "input_tokens": tokens,
                "confidence": confidence,
                "attributes": attrs,
            }),
        );
    }
    let dir = tempfile::tempdir().expect("tmp");
    let src = dir.path().join("unusual.jsonl");
    std::fs::write(&src, lines.join("\n")).expect("write");
    let data = dir.path().join("data");
    let out = bin().arg("import").arg(&src).arg("--data-dir").arg(&data).output().expect("import");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let all = "SELECT span_id, tenant, CAST(timestamp AS BIGINT) AS ns, content, input_tokens, confidence, attributes \
               FROM events ORDER BY span_id";
    let check = |rows: &Value, path: &str| {
        let rows = rows.as_array().expect("rows");
        assert_eq!(rows.len(), expected.len(), "{path}");
        for (row, (span, want)) in rows.iter().zip(&expected) {
            assert_eq!(row["span_id"].as_str(), Some(span.as_str()), "{path}");
            for field in ["tenant", "ns", "content", "input_tokens", "confidence", "attributes"] {
                assert_eq!(row[field], want[field], "{path}: span {span}, {field}");
            }
        }
    };
    check(&sql_json(&data, all), "import");
    // The same lines through the server's write path (WAL, memory, then a hot segment).
    let server = common::start(&dir.path().join("served"));
    let (status, body) = common::post(&format!("{}/v1/events", server.base), &lines.join("\n"));
    assert_eq!(status, 200, "{body}");
    let out = bin().args(["sql", all, "--format", "json", "--server", &server.base]).output().expect("sql");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    check(&serde_json::from_slice(&out.stdout).expect("json"), "HTTP");
    // The rows are found by what they hold, too: a pre-1970 bound, and a LIKE whose `_` stands
    // for the NUL (a command line cannot carry one).
    let v = sql_json(&data, "SELECT count(*) AS n FROM events WHERE timestamp < '1970-01-01'");
    assert_eq!(v[0]["n"].as_u64(), Some(expected.values().filter(|w| w["ns"].as_i64() < Some(0)).count() as u64));
    let v = sql_json(&data, "SELECT count(*) AS n FROM events WHERE content LIKE '%NUL_inside%'");
    assert_eq!(v[0]["n"].as_u64(), Some(20));
    // Tenants become folder names a Hive reader splits at the first `=`: twice, so the second
    // export merges into the folders of the first.
    let export = dir.path().join("export");
    for _ in 0..2 {
        let out = bin().args(["export", "--out"]).arg(&export).arg("--data-dir").arg(&data).output().expect("export");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let mut names: Vec<String> = std::fs::read_dir(&export)
        .expect("out")
        .map(|e| e.expect("e").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["tenant=%C3%BCn%C3%AFcode", "tenant=a%2Fb%3Dc%25", "tenant=default", "tenant=with space"],
        "one `=` per folder name"
    );
    assert_eq!(walk_parquet(&export.join("tenant=a%2Fb%3Dc%25")).len(), 2 * times.len());
}
