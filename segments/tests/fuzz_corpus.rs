//! Runs the cargo-fuzz seed corpus of `segment_open` as an ordinary test, so CI exercises it.
//! `GENERATE_SEEDS=1` rewrites the seeds.

use std::path::PathBuf;

use segments::{Codec, Event, SegmentWriter, WriterOptions};

fn corpus() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/segment_open")
}

#[test]
fn seed_corpus_opens_without_panics() {
    if std::env::var_os("GENERATE_SEEDS").is_some() {
        std::fs::create_dir_all(corpus()).expect("dir");
        let events: Vec<Event> = (0..20)
            .map(|i| Event {
                tenant: "t".into(),
                agent_id: format!("a{}", i % 3).into(),
                kind: "thought".into(),
                status: "ok".into(),
                timestamp_ns: i * 1000,
                content: Some(format!("text {i}")),
                intent: (i % 2 == 0).then(|| "refund".into()),
                attributes: vec![("k".into(), format!("{i}").into())],
                ..Default::default()
            })
            .collect();
        for (name, codec) in [("lz4", Codec::Lz4), ("zstd", Codec::Zstd(3)), ("none", Codec::None)] {
            let bytes = SegmentWriter::new(WriterOptions {
                block_rows: 8,
                codec,
                text_codec: codec,
                text_index: true,
                text_page_rows: Some(3),
                text_dictionary: None,
            })
            .encode(&events);
            // `valid-*` and `truncated-*` are format-1 files, `paged-*` format-2 files, kept
            // as written; new seeds are format 3.
            std::fs::write(corpus().join(format!("pages3-{name}")), &bytes).expect("w");
            std::fs::write(corpus().join(format!("pages3-truncated-{name}")), &bytes[..bytes.len() / 2]).expect("w");
        }
        // Format 3: text in pages compressed against a trained dictionary.
        let words = ["refund", "order", "status", "the", "customer", "asked", "tool", "returned"];
        let events: Vec<Event> = (0..160)
            .map(|i| Event {
                tenant: "t".into(),
                kind: "thought".into(),
                status: "ok".into(),
                timestamp_ns: i * 1000,
                content: Some(
                    (0..12).map(|k| words[(i as usize * 5 + k * k) % words.len()]).collect::<Vec<_>>().join(" "),
                ),
                ..Default::default()
            })
            .collect();
        let bytes = SegmentWriter::new(WriterOptions {
            block_rows: 64,
            codec: Codec::Zstd(3),
            text_codec: Codec::Zstd(3),
            text_index: true,
            text_page_rows: Some(3),
            text_dictionary: Some(segments::TextDictionaryOptions {
                dict_bytes: 512,
                page_rows: 4,
                sample_bytes: 1 << 20,
            }),
        })
        .encode(&events);
        assert!(segments::Segment::from_bytes("d", bytes.clone()).expect("open").has_text_dictionary());
        std::fs::write(corpus().join("dict-zstd"), &bytes).expect("w");
        std::fs::write(corpus().join("dict-truncated-zstd"), &bytes[..bytes.len() / 2]).expect("w");
    }
    let mut n = 0;
    for entry in std::fs::read_dir(corpus()).expect("seed corpus exists") {
        let bytes = std::fs::read(entry.expect("entry").path()).expect("read");
        segments::fuzz_open_and_read(&bytes);
        n += 1;
    }
    assert!(n >= 4, "seed corpus has {n} files");
}
