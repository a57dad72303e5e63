//! Token index over free text (the `content` column): which blocks of a segment contain each
//! token, so `content LIKE '%word%'` reads only the blocks that can match.
//!
//! A token is a maximal run of alphanumeric characters, lowercased character by character
//! (so the mapping commutes with concatenation, unlike `str::to_lowercase`). Tokens longer
//! than [`WINDOW`] characters are stored as windows of `WINDOW` characters every
//! [`STEP`] characters, so any piece of at most `STEP` characters of a long token lies inside
//! one stored window.
//!
//! A query piece (one alphanumeric run of a LIKE pattern's literal part, lowercased and cut to
//! `STEP` characters) occurs in a text only if some token of that text contains it, so the
//! blocks of the tokens that contain the piece are a superset of the blocks that match. The
//! scan still evaluates the LIKE on every row it reads; the index only skips blocks.

use std::collections::HashSet;

use memchr::memmem;

/// Longest token stored whole (characters).
pub const WINDOW: usize = 64;
/// Stride of the windows of a longer token, and the longest query piece used (characters).
pub const STEP: usize = 32;

/// Sorted distinct tokens, each with the sorted block numbers it occurs in. Flat buffers, so a
/// segment's index is a handful of allocations however many tokens it holds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TextIndex {
    pub(crate) text: Vec<u8>,
    /// `n_tokens + 1` offsets into `text`.
    pub(crate) token_offsets: Vec<u32>,
    pub(crate) blocks: Vec<u32>,
    /// `n_tokens + 1` offsets into `blocks`.
    pub(crate) block_offsets: Vec<u32>,
    pub(crate) n_blocks: u32,
}

fn lower_alnum_runs(s: &str, mut f: impl FnMut(&str)) {
    let mut cur = String::new();
    for ch in s.chars() {
        if ch.is_alphanumeric() {
            cur.extend(ch.to_lowercase());
        } else if !cur.is_empty() {
            f(&cur);
            cur.clear();
        }
    }
    if !cur.is_empty() {
        f(&cur);
    }
}

/// The tokens of `text` as stored (long ones as windows), added to `out`.
pub fn tokenize(text: &str, out: &mut HashSet<String>) {
    lower_alnum_runs(text, |tok| {
        let chars: Vec<(usize, char)> = tok.char_indices().collect();
        if chars.len() <= WINDOW {
            if !out.contains(tok) {
                out.insert(tok.to_owned());
            }
            return;
        }
        let mut start = 0;
        loop {
            let end = (start + WINDOW).min(chars.len());
            let (a, b) = (chars[start].0, chars.get(end).map_or(tok.len(), |c| c.0));
            out.insert(tok[a..b].to_owned());
            if end == chars.len() {
                break;
            }
            start += STEP;
        }
    });
}

/// The pieces a LIKE pattern requires of a matching text: the alphanumeric runs of its
/// literal parts, lowercased and cut to [`STEP`] characters. `None` when the pattern uses an
/// escape character (no pruning then).
pub fn like_pieces(pattern: &str) -> Option<Vec<String>> {
    if pattern.contains('\\') {
        return None;
    }
    let mut pieces = Vec::new();
    for fragment in pattern.split(['%', '_']) {
        lower_alnum_runs(fragment, |run| {
            let cut: String = run.chars().take(STEP).collect();
            if !pieces.contains(&cut) {
                pieces.push(cut);
            }
        });
    }
    Some(pieces)
}

impl TextIndex {
    /// Build from the distinct tokens of each block, in block order.
    pub fn from_blocks(blocks: Vec<HashSet<String>>) -> TextIndex {
        let n_blocks = blocks.len() as u32;
        let mut pairs: Vec<(String, u32)> = Vec::new();
        for (b, set) in blocks.into_iter().enumerate() {
            pairs.extend(set.into_iter().map(|t| (t, b as u32)));
        }
        pairs.sort_unstable();
        let mut idx = TextIndex { n_blocks, token_offsets: vec![0], block_offsets: vec![0], ..Default::default() };
        let mut i = 0;
        while i < pairs.len() {
            let tok = &pairs[i].0;
            idx.text.extend_from_slice(tok.as_bytes());
            idx.token_offsets.push(idx.text.len() as u32);
            while i < pairs.len() && pairs[i].0 == *tok {
                idx.blocks.push(pairs[i].1);
                i += 1;
            }
            idx.block_offsets.push(idx.blocks.len() as u32);
        }
        idx
    }

    pub fn n_tokens(&self) -> usize {
        self.token_offsets.len().saturating_sub(1)
    }

    pub fn n_blocks(&self) -> u32 {
        self.n_blocks
    }

    fn token(&self, i: usize) -> &[u8] {
        &self.text[self.token_offsets[i] as usize..self.token_offsets[i + 1] as usize]
    }

    fn token_blocks(&self, i: usize) -> &[u32] {
        &self.blocks[self.block_offsets[i] as usize..self.block_offsets[i + 1] as usize]
    }

    /// Blocks that may hold a text containing every piece (see [`like_pieces`]): one flag per
    /// block. No pieces: every block.
    pub fn candidate_blocks(&self, pieces: &[String]) -> Vec<bool> {
        let mut keep = vec![true; self.n_blocks as usize];
        for piece in pieces {
            let finder = memmem::Finder::new(piece.as_bytes());
            let mut hit = vec![false; self.n_blocks as usize];
            for t in 0..self.n_tokens() {
                if finder.find(self.token(t)).is_some() {
                    for b in self.token_blocks(t) {
                        if let Some(slot) = hit.get_mut(*b as usize) {
                            *slot = true;
                        }
                    }
                }
            }
            for (k, h) in keep.iter_mut().zip(hit) {
                *k &= h;
            }
        }
        keep
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What LIKE means, for patterns without escapes: `%` any run, `_` one character.
    fn like(text: &str, pattern: &str) -> bool {
        fn go(t: &[char], p: &[char]) -> bool {
            match p.split_first() {
                None => t.is_empty(),
                Some(('%', rest)) => (0..=t.len()).any(|i| go(&t[i..], rest)),
                Some(('_', rest)) => !t.is_empty() && go(&t[1..], rest),
                Some((c, rest)) => t.first() == Some(c) && go(&t[1..], rest),
            }
        }
        go(&text.chars().collect::<Vec<_>>(), &pattern.chars().collect::<Vec<_>>())
    }

    fn index_of(blocks: &[Vec<String>]) -> TextIndex {
        TextIndex::from_blocks(
            blocks
                .iter()
                .map(|texts| {
                    let mut set = HashSet::new();
                    for t in texts {
                        tokenize(t, &mut set);
                    }
                    set
                })
                .collect(),
        )
    }

    #[test]
    fn finds_the_blocks_of_an_order_number() {
        let idx = index_of(&[
            vec!["Refund for ORD-8244153 approved".into(), "hello".into()],
            vec!["ORD-1 and ord-82441530".into()],
            vec!["nothing here".into()],
        ]);
        let p = like_pieces("%ORD-8244153%").expect("pieces");
        assert_eq!(p, ["ord", "8244153"]);
        assert_eq!(idx.candidate_blocks(&p), [true, true, false]);
        assert_eq!(idx.candidate_blocks(&like_pieces("%zzz%").expect("p")), [false, false, false]);
        assert_eq!(idx.candidate_blocks(&[]), [true, true, true]);
        assert_eq!(like_pieces("a\\%b"), None);
    }

    #[test]
    fn long_tokens_are_found_anywhere_inside() {
        let long: String = (0..300).map(|i| char::from(b'a' + (i * 7 % 26) as u8)).collect();
        let idx = index_of(&[vec![format!("x {long} y")], vec!["short".into()]]);
        for start in [0, 1, 31, 32, 33, 100, 250, 268] {
            let piece = &long[start..(start + 32).min(long.len())];
            let p = like_pieces(&format!("%{piece}%")).expect("pieces");
            assert_eq!(idx.candidate_blocks(&p), [true, false], "at {start}");
        }
        // Longer pieces are cut to STEP characters and still found.
        let p = like_pieces(&format!("%{}%", &long[10..200])).expect("pieces");
        assert_eq!(idx.candidate_blocks(&p), [true, false]);
    }

    proptest! {
        /// Never prunes a block holding a match (the scan re-checks the rows it reads).
        #[test]
        fn candidate_blocks_never_miss_a_match(
            blocks in proptest::collection::vec(proptest::collection::vec("[a-cA-Cé1 ,.-]{0,80}", 0..5), 1..6),
            pattern in "[%_]?[a-cA-Cé1 ,.-]{1,8}[%_]?[a-c1 ]{0,3}%?",
        ) {
            let idx = index_of(&blocks);
            let pieces = like_pieces(&pattern).expect("no escapes");
            let keep = idx.candidate_blocks(&pieces);
            for (b, texts) in blocks.iter().enumerate() {
                if texts.iter().any(|t| like(t, &pattern)) {
                    prop_assert!(keep[b], "block {} holds a match for {:?}", b, pattern);
                }
            }
        }

        #[test]
        fn long_runs_never_miss(run in "[ab]{60,200}", start in 0usize..200, len in 1usize..80) {
            let idx = index_of(&[vec![format!("<{run}>")]]);
            let start = start.min(run.len() - 1);
            let end = (start + len).min(run.len());
            let p = like_pieces(&format!("%{}%", &run[start..end])).expect("pieces");
            prop_assert_eq!(idx.candidate_blocks(&p), vec![true]);
        }
    }
}
