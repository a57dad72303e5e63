//! Runs the cargo-fuzz seed corpus of `wal_record` as an ordinary test, so CI exercises it.
//! `GENERATE_SEEDS=1` rewrites the seeds.

use std::path::PathBuf;

fn corpus() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/wal_record")
}

#[test]
fn seed_corpus_decodes_without_panics() {
    if std::env::var_os("GENERATE_SEEDS").is_some() {
        std::fs::create_dir_all(corpus()).expect("dir");
        let mut buf = Vec::new();
        for i in 0..5u64 {
            wal::encode_record(&mut buf, i + 1, format!("payload {i}").as_bytes());
        }
        std::fs::write(corpus().join("valid-5"), &buf).expect("w");
        std::fs::write(corpus().join("torn"), &buf[..buf.len() - 3]).expect("w");
        let mut flipped = buf.clone();
        flipped[30] ^= 4;
        std::fs::write(corpus().join("flipped"), &flipped).expect("w");
        std::fs::write(corpus().join("huge-len"), [0xff, 0xff, 0xff, 0x7f, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0])
            .expect("w");
    }
    let mut n = 0;
    for entry in std::fs::read_dir(corpus()).expect("seed corpus exists") {
        let bytes = std::fs::read(entry.expect("entry").path()).expect("read");
        wal::record::fuzz_decode(&bytes);
        n += 1;
    }
    assert!(n >= 4, "seed corpus has {n} files");
}
