//! The offline commands end to end: import (with a bad line), sql in every format, and export
//! to Hive-style Parquet read back by DataFusion and compared with the source rows.

use std::process::Command;

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

/// Stdin, Windows line breaks and blank lines: every event is stored, and a line that is not
/// UTF-8 stops the import naming its line, with the events before it kept.
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
    let mut input = Vec::new();
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
