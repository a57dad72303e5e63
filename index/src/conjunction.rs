//! A conjunction of column terms turned into the bitmap of matching rows.

use roaring::RoaringBitmap;

use crate::{IndexedColumn, SegmentIndex};

/// One term: `column IN (values)`, where a `None` value means `IS NULL`. With `negated`, the
/// term is SQL's `column NOT IN (values)` / `IS NOT NULL`: null rows never match a negated
/// comparison against non-null values, and `IS NOT NULL` (negated `[None]`) keeps non-null rows.
#[derive(Debug, Clone, PartialEq)]
pub struct Term {
    pub column: IndexedColumn,
    pub values: Vec<Option<String>>,
    pub negated: bool,
}

/// Terms joined by AND. `trace_id`, when set, restricts to one trace's rows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Conjunction {
    pub terms: Vec<Term>,
    pub trace_ids: Option<Vec<[u8; 16]>>,
}

impl Conjunction {
    pub fn is_empty(&self) -> bool {
        self.terms.is_empty() && self.trace_ids.is_none()
    }

    pub(crate) fn evaluate(&self, idx: &SegmentIndex) -> RoaringBitmap {
        let mut acc: Option<RoaringBitmap> = None;
        if let Some(ids) = &self.trace_ids {
            let mut b = RoaringBitmap::new();
            for id in ids {
                if let Some(r) = idx.traces.rows(id) {
                    b |= r;
                }
            }
            acc = Some(b);
        }
        // Most selective first keeps intermediate bitmaps small.
        let mut terms: Vec<(RoaringBitmap, &Term)> = self.terms.iter().map(|t| (term_rows(idx, t), t)).collect();
        terms.sort_by_key(|(b, _)| b.len());
        for (b, _) in terms {
            acc = Some(match acc {
                None => b,
                Some(a) => a & b,
            });
            if acc.as_ref().is_some_and(|a| a.is_empty()) {
                break;
            }
        }
        acc.unwrap_or_else(|| full(idx.rows))
    }
}

fn full(rows: u32) -> RoaringBitmap {
    let mut b = RoaringBitmap::new();
    b.insert_range(0..rows);
    b
}

fn term_rows(idx: &SegmentIndex, t: &Term) -> RoaringBitmap {
    let col = idx.column(t.column);
    let mut hit = RoaringBitmap::new();
    for v in &t.values {
        if let Some(b) = col.rows(v.as_deref()) {
            hit |= b;
        }
    }
    if !t.negated {
        return hit;
    }
    let mut rest = full(idx.rows) - hit;
    if t.values.iter().any(|v| v.is_some()) {
        if let Some(nulls) = col.rows(None) {
            rest -= nulls;
        }
    }
    rest
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::IndexBuilder;
    use proptest::prelude::*;

    const VALS: [Option<&str>; 4] = [None, Some("a"), Some("b"), Some("c")];

    fn build(rows: &[(usize, usize)]) -> SegmentIndex {
        let mut b = IndexBuilder::new();
        for (i, (x, y)) in rows.iter().enumerate() {
            let mut vals = [None; 6];
            vals[0] = VALS[*x];
            vals[2] = VALS[*y];
            b.push(vals, [(i % 3) as u8; 16]);
        }
        b.finish()
    }

    fn matches(v: Option<&str>, t: &Term) -> bool {
        let inlist = t.values.iter().any(|x| x.as_deref() == v);
        if !t.negated {
            return inlist;
        }
        match v {
            None => !t.values.iter().any(|x| x.is_some()) && !inlist,
            Some(_) => !inlist,
        }
    }

    proptest! {
        #[test]
        fn conjunction_matches_row_by_row_evaluation(
            rows in proptest::collection::vec((0usize..4, 0usize..4), 0..200),
            t1 in proptest::collection::vec(0usize..4, 1..3), n1 in any::<bool>(),
            t2 in proptest::collection::vec(0usize..4, 1..3), n2 in any::<bool>(),
            trace in proptest::option::of(0u8..4),
        ) {
            let idx = build(&rows);
            let term1 = Term { column: IndexedColumn::Tenant, values: t1.iter().map(|i| VALS[*i].map(String::from)).collect(), negated: n1 };
            let term2 = Term { column: IndexedColumn::Intent, values: t2.iter().map(|i| VALS[*i].map(String::from)).collect(), negated: n2 };
            let conj = Conjunction { terms: vec![term1.clone(), term2.clone()], trace_ids: trace.map(|t| vec![[t; 16]]) };
            let got: Vec<u32> = idx.evaluate(&conj).iter().collect();
            let want: Vec<u32> = rows.iter().enumerate().filter(|(i, (x, y))| {
                matches(VALS[*x], &term1) && matches(VALS[*y], &term2)
                    && trace.is_none_or(|t| (*i % 3) as u8 == t)
            }).map(|(i, _)| i as u32).collect();
            prop_assert_eq!(got, want);
            // And the encoding round-trips.
            let mut bytes = Vec::new();
            idx.encode(None, &mut bytes);
            prop_assert_eq!(SegmentIndex::skim(&bytes), Ok((idx.rows, None)));
            prop_assert_eq!(SegmentIndex::decode(&bytes).expect("decode"), (idx, None));
        }
    }

    #[test]
    fn empty_conjunction_is_all_rows() {
        let idx = build(&[(0, 0), (1, 1), (2, 2)]);
        assert_eq!(idx.evaluate(&Conjunction::default()).len(), 3);
    }
}
