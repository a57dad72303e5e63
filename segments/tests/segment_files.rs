//! Segment files end to end: round-trip through disk, index contents, and typed errors for
//! truncated and corrupted files (every truncation point, random bit flips).

use proptest::prelude::*;
use segments::{Codec, ColumnId, Event, Segment, SegmentError, SegmentWriter, TextDictionaryOptions, WriterOptions};

fn sample(n: usize) -> Vec<Event> {
    (0..n)
        .map(|i| Event {
            tenant: ["acme", "initech"][i % 2].into(),
            trace_id: [(i / 7) as u8; 16],
            span_id: (i as u64).to_le_bytes(),
            parent_span_id: (i % 7 != 0).then(|| ((i - 1) as u64).to_le_bytes()),
            agent_id: format!("agent-{}", i % 5).into(),
            session_id: (i % 3 == 0).then(|| format!("s{}", i / 30).into()),
            timestamp_ns: 1_700_000_000_000_000_000 + i as i64 * 1_234_567,
            kind: ["thought", "action", "tool_call", "output"][i % 4].into(),
            name: Some(format!("step{}", i % 9).into()),
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
                vec![("env".into(), "prod".into()), ("retry".into(), format!("{}", i % 2).into())]
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
        text_dictionary: Some(small_dictionary()),
    }
}

/// A dictionary small enough that a few hundred rows of sample text train one.
fn small_dictionary() -> TextDictionaryOptions {
    TextDictionaryOptions { dict_bytes: 512, page_rows: 4, sample_bytes: 64 << 10 }
}

#[test]
fn roundtrip_through_disk_with_index() {
    let dir = tempfile::tempdir().expect("tmp");
    let events = sample(1000);
    let path = dir.path().join("a.seg");
    let info = SegmentWriter::new(opts(128)).write(&path, &events).expect("write");
    assert_eq!(info.rows, 1000);
    let seg = Segment::open(&path).expect("open");
    assert!(seg.has_text_dictionary(), "1,000 rows of text train a dictionary");
    // The dictionary is prepared when text is first read, not at open.
    assert!(!seg.text_dictionary_prepared());
    for col in ColumnId::ALL.iter().filter(|c| **c != ColumnId::Content) {
        seg.read_column(0, *col).expect("a column other than the text");
    }
    assert!(!seg.text_dictionary_prepared(), "columns other than the text need no dictionary");
    let first = seg.read_text_rows(0, ColumnId::Content, &[0, 3]).expect("text rows");
    assert_eq!(first.get(0), events[0].content.as_deref());
    assert!(seg.text_dictionary_prepared());
    assert_eq!(seg.rows(), 1000);
    assert_eq!(seg.blocks().len(), 8);
    let raw: u64 = (0..8)
        .flat_map(|b| ColumnId::ALL.iter().map(move |c| (b, *c)))
        .map(|(b, c)| u64::from(seg.chunk(b, c).raw_len))
        .sum();
    assert_eq!(seg.raw_bytes(), raw, "every chunk's raw length, summed at open");
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
    let idx = seg.load_index().expect("index");
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

/// The bytes before the footer (which records when the file was written).
fn before_footer(bytes: &[u8]) -> &[u8] {
    let n = bytes.len();
    let footer_len = u32::from_le_bytes(bytes[n - 16..n - 12].try_into().expect("4 bytes")) as usize;
    &bytes[..n - 16 - footer_len]
}

/// A segment written piece by piece (whole blocks per piece) is the segment written at once:
/// the same bytes up to the footer and the same blocks; the temporary file is gone.
#[test]
fn piece_by_piece_is_the_segment_written_whole() {
    let dir = tempfile::tempdir().expect("tmp");
    let events = sample(1000);
    let w = SegmentWriter::new(opts(64));
    let whole = dir.path().join("whole.seg");
    w.write(&whole, &events).expect("write");
    let pieces = dir.path().join("pieces.seg");
    let texts: Vec<&str> = events.iter().filter_map(|e| e.content.as_deref()).collect();
    let dict = w.train_dictionary(&texts, texts.iter().map(|t| t.len()).sum());
    assert!(dict.is_some(), "enough text for a dictionary");
    let mut f = w.create(&pieces, dict).expect("create");
    let refs: Vec<&Event> = events.iter().collect();
    for piece in [&refs[..192], &refs[192..256], &refs[256..256], &refs[256..]] {
        f.push(piece).expect("push");
    }
    assert_eq!(f.rows(), 1000);
    let info = f.finish().expect("finish");
    assert_eq!((info.rows, info.path.as_path()), (1000, pieces.as_path()));
    let (a, b) = (std::fs::read(&whole).expect("read"), std::fs::read(&pieces).expect("read"));
    assert_eq!(info.bytes, b.len() as u64);
    assert!(before_footer(&a) == before_footer(&b), "same data, dictionary and index");
    let (sa, sb) = (Segment::open(&whole).expect("open"), Segment::open(&pieces).expect("open"));
    assert_eq!(sa.blocks(), sb.blocks());
    assert_eq!(sb.read_all().expect("read"), events);
    assert!(!pieces.with_extension("tmp").exists());
    // Dropped unfinished: no file left behind.
    let mut f = w.create(&dir.path().join("dropped.seg"), None).expect("create");
    f.push(&refs[..10]).expect("push");
    drop(f);
    let left: Vec<_> = std::fs::read_dir(dir.path()).expect("dir").map(|e| e.expect("entry").file_name()).collect();
    assert_eq!(left.len(), 2, "{left:?}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    /// Pieces of any size (a short block inside the segment where a piece is not a whole
    /// number of blocks) give a valid segment with every row, index and token in place.
    #[test]
    fn pieces_of_any_size_read_back(cuts in proptest::collection::vec(0usize..300, 0..5), block_rows in 1usize..50) {
        let dir = tempfile::tempdir().expect("tmp");
        let events = sample(300);
        let refs: Vec<&Event> = events.iter().collect();
        let mut cuts = cuts;
        cuts.push(0);
        cuts.push(300);
        cuts.sort_unstable();
        let path = dir.path().join("p.seg");
        let w = SegmentWriter::new(opts(block_rows));
        let mut f = w.create(&path, None).expect("create");
        for pair in cuts.windows(2) {
            f.push(&refs[pair[0]..pair[1]]).expect("push");
        }
        f.finish().expect("finish");
        let seg = Segment::open(&path).expect("open");
        prop_assert_eq!(seg.read_all().expect("read"), events.clone());
        let trace = seg.load_index().expect("index").traces.rows(&[3u8; 16]).expect("trace 3");
        prop_assert_eq!(trace.iter().collect::<Vec<_>>(), (21..28).collect::<Vec<u32>>());
        let text = seg.load_text_index().expect("decodes").expect("has one");
        let pieces = index::text::like_pieces("%number 123 %").expect("pieces");
        let got = text.candidate_blocks(&pieces);
        for (b, meta) in seg.blocks().iter().enumerate() {
            let rows = &events[meta.first_row as usize..(meta.first_row + u64::from(meta.rows)) as usize];
            let holds = rows.iter().any(|e| e.content.as_deref().is_some_and(|c| c.contains("number 123 ")));
            prop_assert!(got[b] || !holds, "block {} holds the word", b);
        }
    }
}

/// The token index is decoded on demand, not on open, and agrees with the text: the blocks it
/// names for a word include every block whose rows hold it (exactly those, for a whole word).
/// (Skipping the compressed frames before it is property-tested with `Codec::decompress_tail`.)
#[test]
fn token_index_loads_on_demand() {
    let dir = tempfile::tempdir().expect("tmp");
    for (n, block_rows) in [(1000, 128), (60_000, 1024)] {
        let mut events = sample(n);
        for (i, e) in events.iter_mut().enumerate() {
            // Unique words make the token index large (as order numbers and ids do).
            e.content = Some(format!("order ORD-{i:07} ref{} w{}", i * 7919 % 100_003, i % 97));
        }
        let path = dir.path().join(format!("t{n}.seg"));
        SegmentWriter::new(opts(block_rows)).write(&path, &events).expect("write");
        let seg = Segment::open(&path).expect("open");
        assert!(seg.has_text_index());
        let text = seg.load_text_index().expect("decodes").expect("has one");
        assert_eq!(text.n_blocks() as usize, seg.blocks().len());
        for word in ["w13", "ORD", "0000999", "ref5"] {
            let pieces = index::text::like_pieces(&format!("%{word}%")).expect("pieces");
            let got = text.candidate_blocks(&pieces);
            for (b, meta) in seg.blocks().iter().enumerate() {
                let rows = &events[meta.first_row as usize..meta.first_row as usize + meta.rows as usize];
                if rows.iter().any(|e| e.content.as_deref().is_some_and(|c| c.contains(word))) {
                    assert!(got[b], "{word}: block {b} holds it");
                }
            }
        }
        let exact = index::text::like_pieces("% w13 %").expect("pieces");
        let got = text.candidate_blocks(&exact);
        for (b, meta) in seg.blocks().iter().enumerate() {
            let rows = &events[meta.first_row as usize..meta.first_row as usize + meta.rows as usize];
            let holds = rows.iter().any(|e| e.content.as_deref().is_some_and(|c| c.ends_with(" w13")));
            assert_eq!(got[b], holds, "whole word w13, block {b}");
        }
    }
    // Without a token index, nothing to load.
    let mut o = opts(128);
    o.text_index = false;
    let path = dir.path().join("plain.seg");
    SegmentWriter::new(o).write(&path, &sample(300)).expect("write");
    let seg = Segment::open(&path).expect("open");
    assert!(!seg.has_text_index());
    assert_eq!(seg.load_text_index().expect("nothing to decode"), None);
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

/// Flip the bits `flips` (modulo the file's bits) of a segment file: reading it must fail, or
/// (the flip hit padding or a bit that changes no value) give back exactly `events`.
fn flips_are_detected_or_harmless(mut bytes: Vec<u8>, flips: &[u64], events: &[Event]) -> bool {
    let n = bytes.len() as u64 * 8;
    for f in flips {
        let bit = (f % n) as usize;
        bytes[bit / 8] ^= 1 << (bit % 8);
    }
    read_everything(bytes).map_or(true, |got| got == events)
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
        let bytes = SegmentWriter::new(opts(16)).encode(&events);
        prop_assert!(flips_are_detected_or_harmless(bytes, &flips, &events));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = read_everything(bytes);
    }
}

/// Text in dictionary pages: a flipped byte in one page fails reads of that page's rows only,
/// naming the block and column; a flipped byte in the dictionary fails the open.
#[test]
fn corrupt_dictionary_pages_and_dictionary_are_typed_errors() {
    let events = sample(400);
    let bytes = SegmentWriter::new(opts(64)).encode(&events);
    let seg = Segment::from_bytes("d.seg", bytes.clone()).expect("open");
    assert!(seg.has_text_dictionary());
    let ch = *seg.chunk(2, ColumnId::Content);
    // The page directory: n_pages, page_rows, then (stored_len, raw_len, crc) per page.
    let chunk = &bytes[ch.offset as usize..(ch.offset + u64::from(ch.len)) as usize];
    let n_pages = u32::from_le_bytes(chunk[0..4].try_into().expect("4 bytes")) as usize;
    let page_rows = u32::from_le_bytes(chunk[4..8].try_into().expect("4 bytes"));
    assert_eq!((n_pages, page_rows), (16, 4));
    let first_page_len = u32::from_le_bytes(chunk[8..12].try_into().expect("4 bytes")) as usize;
    // Flip a byte of the second page.
    let mut bad = bytes.clone();
    bad[ch.offset as usize + 8 + n_pages * 12 + first_page_len + 1] ^= 0x40;
    let seg = Segment::from_bytes("d.seg", bad).expect("directory still valid");
    let first = seg.read_text_rows(2, ColumnId::Content, &[0, 1, 2, 3]).expect("first page intact");
    assert_eq!(first.get(3), events[64 * 2 + 3].content.as_deref());
    assert_eq!(
        seg.read_text_rows(2, ColumnId::Content, &[9]).expect("third page intact").get(0),
        events[64 * 2 + 9].content.as_deref()
    );
    for err in [
        seg.read_text_rows(2, ColumnId::Content, &[5]).expect_err("second page corrupt"),
        seg.read_column(2, ColumnId::Content).expect_err("whole block reads the second page"),
    ] {
        let msg = err.to_string();
        assert!(msg.contains("d.seg") && msg.contains("block 2") && msg.contains("content"), "{msg}");
        assert!(msg.contains("checksum"), "{msg}");
    }
    // A flipped byte in the page directory fails the block's checksum.
    let mut bad = bytes.clone();
    bad[ch.offset as usize + 9] ^= 1;
    let seg = Segment::from_bytes("d.seg", bad).expect("directory still valid");
    assert!(seg.read_text_rows(2, ColumnId::Content, &[0]).is_err());
    // The dictionary lies after the last block's chunks, before the index.
    let last = seg.blocks().len() - 1;
    let dict_at = (ColumnId::ALL.iter().map(|c| {
        let ch = seg.chunk(last, *c);
        ch.offset + u64::from(ch.len)
    }))
    .max()
    .expect("columns") as usize;
    let mut bad = bytes;
    bad[dict_at + 10] ^= 1;
    let err = Segment::from_bytes("d.seg", bad).expect_err("dictionary checked at open");
    assert!(err.to_string().contains("text dictionary"), "{err}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]
    /// Bit flips in a file with dictionary pages: detected, or no value changes.
    #[test]
    fn bit_flips_in_dictionary_pages_never_change_data(flips in proptest::collection::vec(any::<u64>(), 1..4)) {
        let events = sample(300);
        let bytes = SegmentWriter::new(opts(64)).encode(&events);
        prop_assert!(Segment::from_bytes("d.seg", bytes.clone()).expect("open").has_text_dictionary());
        prop_assert!(flips_are_detected_or_harmless(bytes, &flips, &events));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(60))]
    /// Reading listed rows of the text column gives those rows' values, paged or not, and a
    /// paged file reads back whole like an unpaged one.
    #[test]
    fn text_rows_match_events(n in 1usize..400, block_rows in 1usize..64, page_rows in proptest::option::of(1usize..20),
                              dict_page_rows in proptest::option::of(1usize..20),
                              picks in proptest::collection::vec(any::<prop::sample::Index>(), 0..30)) {
        let mut events = sample(n);
        for (i, e) in events.iter_mut().enumerate() {
            if i % 11 == 4 {
                e.content = None;
            }
        }
        let text_dictionary = dict_page_rows.map(|page_rows| TextDictionaryOptions { page_rows, ..small_dictionary() });
        let o = WriterOptions { text_page_rows: page_rows, text_dictionary, ..opts(block_rows) };
        let seg = Segment::from_bytes("p.seg", SegmentWriter::new(o).encode(&events)).expect("open");
        // Too little text (under 16 times the dictionary's size) trains none.
        let text: usize = events.iter().filter_map(|e| e.content.as_ref()).map(String::len).sum();
        if seg.has_text_dictionary() {
            prop_assert!(dict_page_rows.is_some() && text >= 16 * 512);
        }
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
            // Out of order (and repeated) rows read correctly too.
            let mut backwards: Vec<u32> = rows.iter().rev().copied().collect();
            backwards.extend(rows.first().copied());
            let got = seg.read_text_rows(b, ColumnId::Content, &backwards).expect("rows backwards");
            for (k, r) in backwards.iter().enumerate() {
                let want = events[meta.first_row as usize + *r as usize].content.as_deref();
                prop_assert_eq!(got.get(k), want);
            }
            let outside = seg.read_text_rows(b, ColumnId::Content, &[meta.rows]);
            prop_assert!(outside.is_err());
        }
    }
}

/// The fuzz corpus's complete (not truncated) seed files whose names start with `prefix`,
/// each with the format version in its footer.
fn corpus_seeds(prefix: &str) -> Vec<(std::path::PathBuf, u32, Vec<u8>)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/segment_open");
    let mut out = Vec::new();
    for path in walk(&dir) {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
        if !name.starts_with(prefix) || name.contains("truncated") {
            continue;
        }
        let bytes = std::fs::read(&path).expect("read seed");
        // Footer version: the footer starts `footer_len` bytes before the 16-byte trailer.
        let n = bytes.len();
        let footer_len = u32::from_le_bytes(bytes[n - 16..n - 12].try_into().expect("4 bytes")) as usize;
        let at = n - 16 - footer_len;
        let version = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
        out.push((path, version, bytes));
    }
    out
}

/// Files written before text pages (format version 1, one frame per text chunk) still open
/// and read: the `valid-*` seeds of the fuzz corpus are such files.
#[test]
fn version_one_files_still_read() {
    let seeds = corpus_seeds("valid-");
    for (path, version, bytes) in &seeds {
        assert_eq!(*version, 1, "{}", path.display());
        let seg = Segment::from_bytes("v1.seg", bytes.clone()).expect("a version 1 file opens");
        assert!(!seg.read_all().expect("and reads").is_empty());
    }
    assert!(seeds.len() >= 3, "version 1 seeds found: {}", seeds.len());
}

/// Files of format version 2 (paged text without a dictionary, no footer extension) still
/// open and read: the `paged-*` seeds of the fuzz corpus are such files.
#[test]
fn version_two_files_still_read() {
    let seeds = corpus_seeds("paged-");
    for (path, version, bytes) in &seeds {
        assert_eq!(*version, 2, "{}", path.display());
        let seg = Segment::from_bytes("v2.seg", bytes.clone()).expect("a version 2 file opens");
        assert!(!seg.has_text_dictionary());
        let all = seg.read_all().expect("and reads");
        assert_eq!(all.len(), 20);
        assert_eq!(all[7].content.as_deref(), Some("text 7"));
    }
    assert_eq!(seeds.len(), 3, "version 2 seeds");
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

/// Resident kilobytes of this process's mappings of `path` (Linux `/proc/self/smaps`).
#[cfg(target_os = "linux")]
fn resident_kb_of(path: &std::path::Path) -> u64 {
    let smaps = std::fs::read_to_string("/proc/self/smaps").expect("smaps");
    let name = path.to_string_lossy();
    let mut inside = false;
    let mut kb = 0;
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if first.contains('-') && first.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            inside = line.ends_with(&*name);
        } else if inside && first == "Rss:" {
            kb += line.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()).expect("Rss value");
        }
    }
    kb
}

/// Releasing a segment's pages takes them off this process's resident set, and reads after
/// it (through the same segment) still see the same data.
#[cfg(target_os = "linux")]
#[test]
fn released_pages_leave_the_resident_set_and_read_back_the_same() {
    let dir = tempfile::tempdir().expect("tmp");
    let events = sample(3000);
    let path = dir.path().join("r.seg");
    SegmentWriter::new(opts(256)).write(&path, &events).expect("write");
    let seg = Segment::open(&path).expect("open");
    assert_eq!(seg.read_all().expect("read"), events);
    let before = resident_kb_of(&path);
    assert!(before >= seg.file_bytes() / 1024 / 2, "reading maps most of the file: {before} KiB");
    seg.release_pages();
    let after = resident_kb_of(&path);
    assert!(after < before / 4, "released: {after} KiB of {before} KiB still resident");
    assert_eq!(seg.read_all().expect("read again"), events);
    assert!(resident_kb_of(&path) > after, "reading maps the pages again");
}
