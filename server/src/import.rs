//! `activemirror import`: JSON Lines files (or stdin) into compacted segments.
//!
//! The input is read in blocks of whole lines (no allocation per line); each block's lines are
//! parsed and validated on every core; events go to a writer thread in batches of
//! [`IMPORT_SEGMENT_ROWS`], each written as one compacted segment while the next batch is
//! parsed. A bad line stops the import with its file, line and field; every event before it
//! is stored.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;

/// Events per bulk-loaded segment: large enough for good compression and few segments, small
/// enough to bound memory (about 1 KB per event in memory).
const IMPORT_SEGMENT_ROWS: usize = 500_000;

/// Bytes read per block of lines: about 16,000 events of generated traffic, enough to keep
/// both cores busy between reads.
const BLOCK_BYTES: usize = 16 << 20;

/// Reads a byte stream in blocks that end at a line break (the last block may not).
pub struct LineBlocks<R> {
    reader: R,
    /// Bytes read past the last line break of the previous block.
    carry: Vec<u8>,
    eof: bool,
}

impl<R: Read> LineBlocks<R> {
    pub fn new(reader: R) -> Self {
        LineBlocks { reader, carry: Vec::new(), eof: false }
    }

    /// The next block of whole lines, about `target` bytes (more when one line is longer);
    /// `None` at the end of the stream.
    pub fn next_block(&mut self, target: usize) -> std::io::Result<Option<Vec<u8>>> {
        let mut buf = std::mem::take(&mut self.carry);
        let mut searched = 0;
        loop {
            if let Some(nl) = buf[searched..].iter().rposition(|&b| b == b'\n').map(|p| p + searched) {
                if buf.len() >= target || self.eof {
                    self.carry = buf.split_off(nl + 1);
                    return Ok(Some(buf));
                }
            }
            if self.eof {
                return Ok((!buf.is_empty()).then_some(buf));
            }
            searched = buf.len();
            let want = target.max(buf.len() / 2).max(1 << 16);
            buf.reserve(want);
            let n = (&mut self.reader).take(want as u64).read_to_end(&mut buf)?;
            if n == 0 {
                self.eof = true;
            }
        }
    }
}

/// The lines of a block with their 1-based numbers, the first numbered `first`; the `\r` of a
/// `\r\n` break is removed, as `BufRead::lines` does. Blank lines are kept (they count).
pub fn numbered_lines(block: &[u8], first: usize) -> Vec<(usize, &[u8])> {
    let mut out = Vec::with_capacity(block.len() / 512 + 1);
    let mut start = 0;
    for (k, nl) in memchr::memchr_iter(b'\n', block).enumerate() {
        out.push((first + k, strip_cr(&block[start..nl])));
        start = nl + 1;
    }
    if start < block.len() {
        // The stream's last line, without a break: kept whole, as `BufRead::lines` keeps it.
        out.push((first + out.len(), &block[start..]));
    }
    out
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Why a line was refused.
enum LineError {
    Utf8(std::str::Utf8Error),
    Invalid(engine::ValidationError),
}

/// Parse one line: `None` for a blank line.
fn parse_line(no: usize, line: &[u8]) -> Option<Result<segments::Event, LineError>> {
    // simdutf8 checks a valid line several times faster; std's check then says where a bad
    // one goes wrong.
    let text = match simdutf8::basic::from_utf8(line).or_else(|_| std::str::from_utf8(line)) {
        Ok(t) => t,
        Err(e) => return Some(Err(LineError::Utf8(e))),
    };
    if text.trim().is_empty() {
        return None;
    }
    Some(engine::parse_event(text, no - 1).map_err(LineError::Invalid))
}

pub fn import(files: &[PathBuf], data_dir: &Path) -> anyhow::Result<()> {
    if files.is_empty() {
        bail!("import needs at least one file (`-` for stdin)");
    }
    let engine = crate::cli::open_engine(data_dir)?;
    let total: u64 =
        files.iter().filter(|f| f.as_os_str() != "-").filter_map(|f| std::fs::metadata(f).ok()).map(|m| m.len()).sum();
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} import [{elapsed_precise}] {bar:30} {bytes}/{total_bytes} {bytes_per_sec} {msg}",
        )
        .context("progress template")?,
    );
    let start = Instant::now();
    // Parsing (parallel, this thread) and segment writing (a writer thread) overlap: while one
    // segment is sorted, encoded and compressed, the next one's lines are parsed. The channel
    // holds no batch of its own, so at most two batches are in memory.
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<segments::Event>>(0);
    let outcome = std::thread::scope(|scope| {
        let engine = &engine;
        let writer = scope.spawn(move || -> anyhow::Result<u64> {
            let mut stored = 0;
            for batch in rx {
                stored += engine.bulk_load(batch)?;
            }
            Ok(stored)
        });
        let parsed = parse_files(files, &bar, &tx);
        drop(tx);
        let stored = writer.join().map_err(|_| anyhow::anyhow!("segment writer panicked"))?;
        Ok::<_, anyhow::Error>((parsed, stored))
    });
    let (parsed, stored) = outcome?;
    let stored = stored?;
    engine.close()?;
    match parsed {
        Err(e) => {
            bar.abandon();
            bail!("{e:#} ({stored} events before it were stored)")
        }
        Ok(_) => bar.finish_and_clear(),
    }
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "imported {stored} events from {} file(s) in {secs:.2} s ({:.0} events/s, {:.1} MB/s)",
        files.len(),
        stored as f64 / secs,
        total as f64 / 1e6 / secs
    );
    Ok(())
}

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// Reads and validates every line, sending batches of [`IMPORT_SEGMENT_ROWS`] to `tx`. Stops at
/// the first bad line (after sending the good events before it) with its file, line and field.
fn parse_files(
    files: &[PathBuf],
    bar: &ProgressBar,
    tx: &std::sync::mpsc::SyncSender<Vec<segments::Event>>,
) -> anyhow::Result<u64> {
    let mut events_total = 0u64;
    let mut pending: Vec<segments::Event> = Vec::new();
    let send = |batch: Vec<segments::Event>| tx.send(batch).map_err(|_| anyhow::anyhow!("segment writer stopped"));
    for file in files {
        let reader: Box<dyn Read + Send> = if file.as_os_str() == "-" {
            Box::new(std::io::stdin())
        } else {
            Box::new(std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?)
        };
        let mut blocks = LineBlocks::new(reader);
        let mut next_line = 1usize;
        let read_error = |next_line: usize| format!("{}: reading after line {next_line}", file.display());
        let mut block = blocks.next_block(BLOCK_BYTES).with_context(|| read_error(next_line))?;
        let mut first_block = true;
        while let Some(current) = block {
            // A UTF-8 byte order mark (Windows tools write one) is not part of the first line.
            let text = match current.strip_prefix(UTF8_BOM) {
                Some(rest) if first_block => rest,
                _ => &current[..],
            };
            first_block = false;
            let lines = numbered_lines(text, next_line);
            next_line += lines.len();
            // The next block is read while this one is parsed.
            let (parsed, next): (Vec<Option<Result<segments::Event, LineError>>>, _) = rayon::join(
                || lines.par_iter().map(|&(no, line)| parse_line(no, line)).collect(),
                || blocks.next_block(BLOCK_BYTES),
            );
            for (p, &(no, _)) in parsed.into_iter().zip(&lines) {
                match p {
                    None => {}
                    Some(Ok(e)) => {
                        pending.push(e);
                        events_total += 1;
                    }
                    Some(Err(e)) => {
                        send(std::mem::take(&mut pending))?;
                        match e {
                            LineError::Utf8(e) => bail!("{}: line {no}: not valid UTF-8: {e}", file.display()),
                            LineError::Invalid(e) => {
                                bail!("{}: line {no}: field `{}`: {}", file.display(), e.field, e.message)
                            }
                        }
                    }
                }
                if pending.len() >= IMPORT_SEGMENT_ROWS {
                    send(std::mem::take(&mut pending))?;
                }
            }
            bar.inc(current.len() as u64);
            bar.set_message(format!("{events_total} events"));
            block = next.with_context(|| read_error(next_line))?;
        }
    }
    send(pending)?;
    Ok(events_total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A reader that hands out at most `step` bytes per call, as pipes do.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = buf.len().min(self.step).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    /// Every line of `data` through blocks, numbered, as `BufRead::lines` would give them.
    fn lines_through_blocks(data: &[u8], step: usize, target: usize) -> Vec<(usize, Vec<u8>)> {
        let mut blocks = LineBlocks::new(Trickle { data, step });
        let mut out = Vec::new();
        let mut next = 1;
        while let Some(block) = blocks.next_block(target).expect("read") {
            let lines = numbered_lines(&block, next);
            next += lines.len();
            out.extend(lines.into_iter().map(|(n, l)| (n, l.to_vec())));
        }
        out
    }

    #[test]
    fn blocks_split_at_line_breaks_only() {
        let data = b"a\r\nbb\n\nccc\nlast";
        let got = lines_through_blocks(data, 3, 4);
        let want: Vec<(usize, Vec<u8>)> =
            vec![(1, b"a".to_vec()), (2, b"bb".to_vec()), (3, vec![]), (4, b"ccc".to_vec()), (5, b"last".to_vec())];
        assert_eq!(got, want);
        assert!(lines_through_blocks(b"", 1, 4).is_empty());
    }

    proptest! {
        /// Whatever the read sizes and block target, the lines and their numbers are those of
        /// `BufRead::lines`.
        #[test]
        fn lines_match_bufread(
            lines in proptest::collection::vec("[a-z{}\":, \r]{0,40}", 0..40),
            trailing_break: bool,
            step in 1usize..64,
            target in 1usize..200,
        ) {
            let mut text = lines.join("\n");
            if trailing_break {
                text.push('\n');
            }
            let want: Vec<(usize, Vec<u8>)> = std::io::BufRead::lines(text.as_bytes())
                .enumerate()
                .map(|(i, l)| (i + 1, l.expect("utf8").into_bytes()))
                .collect();
            prop_assert_eq!(lines_through_blocks(text.as_bytes(), step, target), want);
        }
    }
}
