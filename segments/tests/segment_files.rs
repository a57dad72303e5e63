//! Segment files end to end: round-trip through disk, index contents, and typed errors for
//! truncated and corrupted files (every truncation point, random bit flips).

use proptest::prelude::*;
use segments::{Codec, ColumnId, Event, Segment, SegmentError, SegmentWriter, WriterOptions};

fn sample(n: usize) -> Vec<Event> {
    (0..n)
        .map(|i| Event {
            tenant: ["acme", "initech"][i % 2].into(),
            trace_id: [(i / 7) as u8; 16],
            span_id: (i as u64).to_le_bytes(),
            parent_span_id: (i % 7 != 0).then(|| ((i - 1) as u64).to_le_bytes()),
            agent_id: format!("agent-{}", i % 5),
            session_id: (i % 3 == 0).then(|| format!("s{}", i / 30)),
            timestamp_ns: 1_700_000_000_000_000_000 + i as i64 * 1_234_567,
            kind: ["thought", "action", "tool_call", "output"][i % 4].into(),
            name: Some(format!("step{}", i % 9)),
            content: Some(format!("content number {i} with some words {}", "lorem ".repeat(i % 5))),
            intent: (i % 4 != 1).then(|| ["refund", "order_status"][i % 2].into()),
            confidence: (i % 5 != 0).then(|| (i % 100) as f64 / 100.0),
            duration_ms: Some(i as f64 * 1.5),
            status: if i % 17 == 0 { "error".into() } else { "ok".into() },
            error_message: (i % 17 == 0).then(|| "boom".into()),
            model: (i % 2 == 0).then(|| "gpt-4o".into()),
            input_tokens: (i % 2 == 0).then_some(i as i64 * 10),
            output_tokens: (i % 2 == 0).then_some(i as i64),
            cost_usd: (i % 2 == 0).then_some(i as f64 * 1e-5),
            attributes: if i % 3 == 0 {
                vec![("env".into(), "prod".into()), ("retry".into(), format!("{}", i % 2))]
            } else {
                vec![]
            },
        })
        .collect()
}

fn opts(block_rows: usize) -> WriterOptions {
    WriterOptions {
        block_rows,
        codec: Codec::Lz4,
        text_codec: Codec::Zstd(5),
        text_index: true,
        text_page_rows: Some(5),
    }
}

#[test]
fn roundtrip_through_disk_with_index() {
    let dir = tempfile::tempdir().expect("tmp");
    let events = sample(1000);
    let path = dir.path().join("a.seg");
    let info = SegmentWriter::new(opts(128)).write(&path, &events).expect("write");
    assert_eq!(info.rows, 1000);
    let seg = Segment::open(&path).expect("open");
    assert_eq!(seg.rows(), 1000);
    assert_eq!(seg.blocks().len(), 8);
    assert_eq!(seg.read_all().expect("read"), events);
    // Block min/max bound every row of the block.
    for (b, meta) in seg.blocks().iter().enumerate() {
        let rows = seg.read_events(b).expect("block");
        assert_eq!(meta.min_ts, rows.iter().map(|e| e.timestamp_ns).min().expect("rows"));
        assert_eq!(meta.max_ts, rows.iter().map(|e| e.timestamp_ns).max().expect("rows"));
        let ch = seg.chunk(b, ColumnId::Confidence);
        let confs: Vec<f64> = rows.iter().filter_map(|e| e.confidence).collect();
        assert_eq!(ch.min, confs.iter().cloned().fold(f64::INFINITY, f64::min));
        assert_eq!(ch.max, confs.iter().cloned().fold(f64::NEG_INFINITY, f64::max));
        assert_eq!(ch.null_count as usize, rows.len() - confs.len());
    }
    // Indexes agree with a scan.
    let idx = seg.index();
    let refund = idx.column(index::IndexedColumn::Intent).rows(Some("refund")).expect("refund rows");
    let want: Vec<u32> = events
        .iter()
        .enumerate()
        .filter(|(_, e)| e.intent.as_deref() == Some("refund"))
        .map(|(i, _)| i as u32)
        .collect();
    assert_eq!(refund.iter().collect::<Vec<_>>(), want);
    let trace = idx.traces.rows(&[3u8; 16]).expect("trace 3");
    assert_eq!(trace.iter().collect::<Vec<_>>(), (21..28).collect::<Vec<u32>>());
}

#[test]
fn empty_segment_is_valid() {
    let bytes = SegmentWriter::new(opts(16)).encode::<Event>(&[]);
    let seg = Segment::from_bytes("empty.seg", bytes).expect("open");
    assert_eq!(seg.rows(), 0);
    assert!(seg.read_all().expect("read").is_empty());
}

fn read_everything(bytes: Vec<u8>) -> Result<Vec<Event>, SegmentError> {
    Segment::from_bytes("x.seg", bytes)?.read_all()
}

#[test]
fn every_truncation_is_a_typed_error() {
    let events = sample(60);
    let bytes = SegmentWriter::new(opts(16)).encode(&events);
    for cut in 0..bytes.len() {
        match read_everything(bytes[..cut].to_vec()) {
            Err(SegmentError::Corrupt { path, .. }) => assert_eq!(path.to_str(), Some("x.seg")),
            Err(e) => panic!("cut {cut}: unexpected error {e}"),
            Ok(_) => panic!("cut {cut}: truncated segment accepted"),
        }
    }
}

#[test]
fn corrupt_block_names_block_and_column() {
    let events = sample(60);
    let bytes = SegmentWriter::new(opts(16)).encode(&events);
    let seg = Segment::from_bytes("x.seg", bytes.clone()).expect("open");
    let ch = *seg.chunk(2, ColumnId::Content);
    let mut bad = bytes;
    bad[ch.offset as usize + 1] ^= 0x40;
    let seg = Segment::from_bytes("x.seg", bad).expect("directory still valid");
    assert!(seg.read_column(1, ColumnId::Content).is_ok());
    let err = seg.read_column(2, ColumnId::Content).expect_err("corruption detected");
    let msg = err.to_string();
    assert!(msg.contains("x.seg") && msg.contains("block 2") && msg.contains("content"), "{msg}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]
    #[test]
    fn random_bit_flips_never_panic_and_never_change_data(flips in proptest::collection::vec(any::<u64>(), 1..4)) {
        let events = sample(40);
        let mut bytes = SegmentWriter::new(opts(16)).encode(&events);
        let n = bytes.len() as u64 * 8;
        for f in &flips {
            let bit = (f % n) as usize;
            bytes[bit / 8] ^= 1 << (bit % 8);
        }
        // Either detected, or the flip hit padding / a bit that does not change any value.
        if let Ok(got) = read_everything(bytes) {
            prop_assert_eq!(got, events);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = read_everything(bytes);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(60))]
    /// Reading listed rows of the text column gives those rows' values, paged or not, and a
    /// paged file reads back whole like an unpaged one.
    #[test]
    fn text_rows_match_events(n in 1usize..200, block_rows in 1usize..64, page_rows in proptest::option::of(1usize..20),
                              picks in proptest::collection::vec(any::<prop::sample::Index>(), 0..30)) {
        let mut events = sample(n);
        for (i, e) in events.iter_mut().enumerate() {
            if i % 11 == 4 {
                e.content = None;
            }
        }
        let o = WriterOptions { text_page_rows: page_rows, ..opts(block_rows) };
        let seg = Segment::from_bytes("p.seg", SegmentWriter::new(o).encode(&events)).expect("open");
        prop_assert_eq!(&seg.read_all().expect("all"), &events);
        for (b, meta) in seg.blocks().iter().enumerate() {
            let mut rows: Vec<u32> = picks.iter().map(|i| i.index(meta.rows as usize) as u32).collect();
            rows.sort_unstable();
            rows.dedup();
            let got = seg.read_text_rows(b, ColumnId::Content, &rows).expect("rows");
            prop_assert_eq!(got.len(), rows.len());
            for (k, r) in rows.iter().enumerate() {
                let want = events[meta.first_row as usize + *r as usize].content.as_deref();
                prop_assert_eq!(got.get(k), want);
            }
            let outside = seg.read_text_rows(b, ColumnId::Content, &[meta.rows]);
            prop_assert!(outside.is_err());
        }
    }
}

/// Files written before text pages (format version 1, one frame per text chunk) still open
/// and read: the `valid-*` seeds of the fuzz corpus are such files.
#[test]
fn version_one_files_still_read() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/segment_open");
    let mut read = 0;
    for path in walk(&dir) {
        if !path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("valid-")) {
            continue;
        }
        let bytes = std::fs::read(&path).expect("read seed");
        // Footer version: the footer starts `footer_len` bytes before the 16-byte trailer.
        let n = bytes.len();
        let footer_len = u32::from_le_bytes(bytes[n - 16..n - 12].try_into().expect("4 bytes")) as usize;
        let at = n - 16 - footer_len;
        let version = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
        assert_eq!(version, 1, "{}", path.display());
        let seg = Segment::from_bytes("v1.seg", bytes).expect("a version 1 file opens");
        assert!(!seg.read_all().expect("and reads").is_empty());
        read += 1;
    }
    assert!(read >= 3, "version 1 seeds found: {read}");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
