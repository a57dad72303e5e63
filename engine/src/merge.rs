//! Compaction's merge: hot segments, each already in the compaction order (flushes write them
//! so, see [`crate::sort_for_compaction`]), merged into one warm segment as the rows stream
//! by. A compaction holds one block of each input and two pieces of output as rows, never its
//! whole input; merging the next piece overlaps encoding the last one (both on rayon's
//! threads, whose allocator memory the server returns after a burst; a thread started per
//! compaction would leave its arena to nobody).
//!
//! An input that turns out not to be in the compaction order (a hot segment flushed by an
//! older version, in time order) stops the merge before anything is kept; the caller then
//! sorts the rows in memory as before.

use std::cmp::Ordering;
use std::collections::VecDeque;
use std::path::Path;

use segments::{ColumnId, Event, Segment, SegmentError, SegmentInfo, SegmentWriter};

/// Blocks the text dictionary's sample is drawn from, spread evenly over the inputs.
const SAMPLE_BLOCKS: usize = 64;

/// The compaction order: (tenant, agent_id, timestamp, trace_id), strings by bytes.
pub fn compaction_order(a: &Event, b: &Event) -> Ordering {
    (a.tenant.as_str(), a.agent_id.as_str(), a.timestamp_ns, &a.trace_id).cmp(&(
        b.tenant.as_str(),
        b.agent_id.as_str(),
        b.timestamp_ns,
        &b.trace_id,
    ))
}

/// One input of the merge, read a block at a time.
struct Run<'a> {
    seg: &'a Segment,
    next_block: usize,
    rows: VecDeque<Event>,
}

impl<'a> Run<'a> {
    fn new(seg: &'a Segment) -> Self {
        Run { seg, next_block: 0, rows: VecDeque::new() }
    }

    /// The next row, reading the next block when this one is used up; `None` at the end.
    fn head(&mut self) -> Result<Option<&Event>, SegmentError> {
        while self.rows.is_empty() && self.next_block < self.seg.blocks().len() {
            self.rows = self.seg.read_events(self.next_block)?.into();
            self.next_block += 1;
        }
        Ok(self.rows.front())
    }
}

/// Merges runs (each in the compaction order) piece by piece; ties go to the earlier run, so
/// the result is the stable sort of the runs' concatenation.
struct Merger<'a> {
    runs: Vec<Run<'a>>,
    piece_rows: usize,
    /// A run was found out of order: the merge is void.
    unsorted: bool,
}

impl<'a> Merger<'a> {
    fn new(inputs: &[&'a Segment], piece_rows: usize) -> Self {
        Merger { runs: inputs.iter().map(|s| Run::new(s)).collect(), piece_rows: piece_rows.max(1), unsorted: false }
    }

    /// The next (up to) `piece_rows` rows; `None` at the end, or once a run is found out of
    /// order (then `unsorted` is set).
    fn next_piece(&mut self) -> Result<Option<Vec<Event>>, SegmentError> {
        let mut piece = Vec::with_capacity(self.piece_rows);
        while piece.len() < self.piece_rows && !self.unsorted {
            // The smallest head; fewer than a dozen runs, so a scan beats a heap.
            let mut best: Option<usize> = None;
            for i in 0..self.runs.len() {
                if self.runs[i].head()?.is_none() {
                    continue;
                }
                best = match best {
                    Some(b) if compaction_order(&self.runs[i].rows[0], &self.runs[b].rows[0]) != Ordering::Less => {
                        Some(b)
                    }
                    _ => Some(i),
                };
            }
            let Some(b) = best else { break };
            let Some(row) = self.runs[b].rows.pop_front() else { break };
            if let Some(next) = self.runs[b].head()? {
                self.unsorted = compaction_order(next, &row) == Ordering::Less;
            }
            piece.push(row);
        }
        Ok((!piece.is_empty() && !self.unsorted).then_some(piece))
    }
}

/// Texts drawn evenly from the inputs' `content` for training the text dictionary (about
/// `budget` bytes, from at most [`SAMPLE_BLOCKS`] blocks), and about the inputs' total text
/// bytes (their `content` chunks' raw lengths, which count each row's length too).
fn sample_text(inputs: &[&Segment], budget: usize) -> Result<(Vec<String>, usize), SegmentError> {
    let blocks: Vec<(&Segment, usize)> =
        inputs.iter().flat_map(|s| (0..s.blocks().len()).map(move |b| (*s, b))).collect();
    let text_bytes = |s: &Segment, b: usize| s.chunk(b, ColumnId::Content).raw_len as usize;
    let total: usize = blocks.iter().map(|&(s, b)| text_bytes(s, b)).sum();
    let picks = SAMPLE_BLOCKS.min(blocks.len());
    let mut sample = Vec::new();
    for k in 0..picks {
        let (seg, b) = blocks[k * blocks.len() / picks];
        let rows = seg.blocks()[b].rows as usize;
        let per_row = (text_bytes(seg, b) / rows.max(1)).max(1);
        let want = (budget / picks / per_row).clamp(1, rows.max(1));
        let picked: Vec<u32> = (0..want).map(|i| (i * rows / want) as u32).collect();
        let texts = seg.read_text_rows(b, ColumnId::Content, &picked)?;
        sample.extend((0..texts.len()).filter_map(|i| texts.get(i)).map(str::to_owned));
    }
    Ok((sample, total))
}

/// Write the merge of `inputs` (each in the compaction order) to `path` as one segment, in
/// pieces of `piece_rows` rows, calling `between_pieces` after each piece is written (a long
/// merge lets other work run there); the merge goes on while it answers `true`. `Ok(None)`,
/// with nothing written, when an input is not in the compaction order or `between_pieces`
/// stopped the merge.
pub fn merge_segments(
    writer: &SegmentWriter,
    inputs: &[&Segment],
    path: &Path,
    piece_rows: usize,
    between_pieces: &mut dyn FnMut() -> bool,
) -> Result<Option<SegmentInfo>, SegmentError> {
    let dict = match writer.options().text_dictionary {
        Some(td) => {
            let (sample, total) = sample_text(inputs, td.sample_bytes)?;
            let texts: Vec<&str> = sample.iter().map(String::as_str).collect();
            writer.train_dictionary(&texts, total)
        }
        None => None,
    };
    let mut file = writer.create(path, dict)?;
    let mut merger = Merger::new(inputs, piece_rows);
    let mut next = merger.next_piece()?;
    while let Some(piece) = next {
        // Encode this piece (on every core) while the next one is merged.
        let (pushed, following) = rayon::join(
            || {
                let refs: Vec<&Event> = piece.iter().collect();
                file.push(&refs)
            },
            || merger.next_piece(),
        );
        pushed?;
        next = following?;
        if next.is_some() && !between_pieces() {
            // Unfinished, `file` removes its temporary file when dropped.
            return Ok(None);
        }
    }
    // Unfinished, `file` removes its temporary file when dropped.
    match merger.unsorted {
        false => file.finish().map(Some),
        true => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use segments::{Codec, TextDictionaryOptions, WriterOptions};

    fn event(i: usize, tenant: u8, agent: u8, ts: i64, trace: u8) -> Event {
        Event {
            tenant: format!("t{tenant}").into(),
            agent_id: format!("agent-{agent}").into(),
            timestamp_ns: ts,
            trace_id: [trace; 16],
            span_id: (i as u64).to_le_bytes(),
            kind: "thought".into(),
            status: "ok".into(),
            content: Some(format!("step {i} of agent {agent}: looked up order ORD-{}", i * 7919 % 10_007)),
            ..Default::default()
        }
    }

    fn options(block_rows: usize) -> WriterOptions {
        WriterOptions {
            block_rows,
            codec: Codec::Lz4,
            text_codec: Codec::Zstd(3),
            text_index: true,
            text_page_rows: Some(4),
            text_dictionary: Some(TextDictionaryOptions { dict_bytes: 512, page_rows: 4, sample_bytes: 16 << 10 }),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        /// Merging sorted segments gives the stable sort of their rows, as sorting them all in
        /// memory does; a segment out of order gives `None` and leaves no file.
        #[test]
        fn merge_is_the_sort_of_the_inputs(
            runs in proptest::collection::vec(
                proptest::collection::vec((0u8..2, 0u8..3, 0i64..30, 0u8..3), 0..150), 1..5),
            block_rows in 1usize..40,
            piece_blocks in 1usize..4,
        ) {
            let dir = tempfile::tempdir().expect("tmp");
            let hot = SegmentWriter::new(WriterOptions::hot());
            let mut all = Vec::new();
            let mut segs = Vec::new();
            for (r, rows) in runs.iter().enumerate() {
                let mut events: Vec<Event> = rows
                    .iter()
                    .map(|&(t, a, ts, tr)| { all.push(()); event(all.len(), t, a, ts, tr) })
                    .collect();
                crate::sort_for_compaction(&mut events);
                let path = dir.path().join(format!("in{r}.seg"));
                hot.write(&path, &events).expect("write");
                segs.push(Segment::open(&path).expect("open"));
            }
            let mut want: Vec<Event> = Vec::new();
            for s in &segs {
                want.extend(s.read_all().expect("read"));
            }
            crate::sort_for_compaction(&mut want);
            let inputs: Vec<&Segment> = segs.iter().collect();
            let out = dir.path().join("out.seg");
            let w = SegmentWriter::new(options(block_rows));
            let mut calls = 0usize;
            let piece_rows = block_rows * piece_blocks;
            let info = merge_segments(&w, &inputs, &out, piece_rows, &mut || {
                calls += 1;
                true
            })
                .expect("merge")
                .expect("sorted");
            prop_assert_eq!(info.rows as usize, want.len());
            // Called between pieces: once fewer than there are pieces.
            prop_assert_eq!(calls, want.len().div_ceil(piece_rows).saturating_sub(1));
            let merged = Segment::open(&out).expect("open");
            prop_assert_eq!(merged.read_all().expect("read"), want.clone());
            // Every block but the last is whole.
            for m in merged.blocks().iter().rev().skip(1) {
                prop_assert_eq!(m.rows as usize, block_rows);
            }

            // An input in time order (as older versions flushed) is refused, and leaves nothing.
            let mut by_time = want.clone();
            by_time.sort_by_key(|e| e.timestamp_ns);
            let unsorted = by_time.windows(2).any(|p| compaction_order(&p[1], &p[0]) == Ordering::Less);
            let path = dir.path().join("time.seg");
            hot.write(&path, &by_time).expect("write");
            let time_seg = Segment::open(&path).expect("open");
            let out2 = dir.path().join("out2.seg");
            let got = merge_segments(&w, &[&time_seg], &out2, block_rows, &mut || true).expect("merge");
            prop_assert_eq!(got.is_none(), unsorted);
            prop_assert_eq!(out2.exists(), !unsorted);
            prop_assert!(!out2.with_extension("tmp").exists());
        }
    }

    /// Enough text for a dictionary: the merged segment trains one on its sample, and its
    /// text reads back.
    #[test]
    fn merged_segments_carry_a_text_dictionary() {
        let dir = tempfile::tempdir().expect("tmp");
        let hot = SegmentWriter::new(WriterOptions::hot());
        let mut segs = Vec::new();
        for r in 0..3 {
            let mut events: Vec<Event> =
                (0..2000).map(|i| event(r * 2000 + i, (i % 2) as u8, (i % 5) as u8, i as i64, (i % 9) as u8)).collect();
            crate::sort_for_compaction(&mut events);
            let path = dir.path().join(format!("in{r}.seg"));
            hot.write(&path, &events).expect("write");
            segs.push(Segment::open(&path).expect("open"));
        }
        let inputs: Vec<&Segment> = segs.iter().collect();
        let out = dir.path().join("out.seg");
        let w = SegmentWriter::new(options(256));
        merge_segments(&w, &inputs, &out, 512, &mut || true).expect("merge").expect("sorted");
        // Stopped after its first piece, a merge writes nothing and leaves no file.
        let stopped = dir.path().join("stopped.seg");
        assert!(merge_segments(&w, &inputs, &stopped, 512, &mut || false).expect("merge").is_none());
        assert!(!stopped.exists() && !stopped.with_extension("tmp").exists());
        let merged = Segment::open(&out).expect("open");
        assert!(merged.has_text_dictionary());
        assert_eq!(merged.rows(), 6000);
        let mut want: Vec<Event> = segs.iter().flat_map(|s| s.read_all().expect("read")).collect();
        crate::sort_for_compaction(&mut want);
        assert_eq!(merged.read_all().expect("read"), want);
    }
}
