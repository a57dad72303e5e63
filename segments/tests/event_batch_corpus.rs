//! Runs the cargo-fuzz seed corpus of `event_batch` (WAL payloads) as an ordinary test, so CI
//! exercises it. `GENERATE_SEEDS=1` rewrites the seeds.

use std::path::PathBuf;

use segments::{decode_events, encode_events, Event};

fn corpus() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/event_batch")
}

fn events() -> Vec<Event> {
    (0..30)
        .map(|i| Event {
            tenant: "acme".into(),
            agent_id: format!("agent-{}", i % 3).into(),
            kind: "thought".into(),
            status: "ok".into(),
            timestamp_ns: 1_700_000_000_000_000_000 + i * 1000,
            content: Some(format!("looking up order {i} for the refund the customer asked about")),
            intent: (i % 2 == 0).then(|| "refund".into()),
            confidence: Some(0.9),
            attributes: vec![("k".into(), format!("{i}").into())],
            ..Default::default()
        })
        .collect()
}

#[test]
fn seed_corpus_decodes_without_panics() {
    if std::env::var_os("GENERATE_SEEDS").is_some() {
        std::fs::create_dir_all(corpus()).expect("dir");
        let mut plain = Vec::new();
        encode_events(&events(), &mut plain);
        std::fs::write(corpus().join("plain"), &plain).expect("w");
        std::fs::write(corpus().join("torn"), &plain[..plain.len() - 5]).expect("w");
        let mut flipped = plain.clone();
        flipped[plain.len() / 2] ^= 0x10;
        std::fs::write(corpus().join("flipped"), &flipped).expect("w");
        // A count of 2^28 events in a few bytes: refused before any allocation.
        std::fs::write(corpus().join("huge-count"), [1, 0x80, 0x80, 0x80, 0x80, 0x01, 0, 1, 2]).expect("w");
    }
    let mut n = 0;
    for entry in std::fs::read_dir(corpus()).expect("seed corpus exists") {
        let path = entry.expect("entry").path();
        let bytes = std::fs::read(&path).expect("read");
        let decoded = decode_events(&bytes);
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
        match name.as_str() {
            "plain" => assert_eq!(decoded.expect("valid seed decodes"), events(), "{name}"),
            "torn" | "huge-count" => assert!(decoded.is_err(), "{name}"),
            _ => {}
        }
        n += 1;
    }
    assert!(n >= 4, "seed corpus has {n} files");
}
