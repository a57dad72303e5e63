//! A TopK by time over the `events` scan (`ORDER BY timestamp DESC LIMIT k`: the latest
//! events, the first thing anyone looks at). Of the rows of one unit (a block, or the
//! in-memory buffer) that pass the scan's filters, a row with `k` rows of the same unit
//! strictly ahead of it on the first sort key cannot be among the query's first `k`; the scan
//! drops it before decoding its other columns. Rows tied with the k-th best are kept, so
//! later sort keys still decide among them.
//!
//! The TopK's own dynamic filter (see [`crate::runtime`]) skips whole blocks once it has seen
//! `k` rows; this covers the units read before that, one per partition, which otherwise
//! decode every row (all the text of a block) to return twenty.

use std::sync::Arc;

use datafusion::common::config::ConfigOptions;
use datafusion::common::Result;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::{ChildrenPropertiesMode, ExecutionPlan, ReplaceChildrenOptions};

use crate::provider::EventsScanExec;

/// The TopK a scan serves: its first sort key is `timestamp`, and it keeps `k` rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeTop {
    pub descending: bool,
    pub k: usize,
}

/// The positions in `values` (timestamps) of the rows a TopK `top` may still need: those not
/// behind `top.k` others. All of them when there are at most `k`.
pub fn best_positions(values: &[i64], top: TimeTop) -> Vec<u32> {
    let all = || (0..values.len() as u32).collect();
    if top.k == 0 || top.k >= values.len() {
        return all();
    }
    let mut v = values.to_vec();
    let kth = if top.descending {
        *v.select_nth_unstable_by(top.k - 1, |a, b| b.cmp(a)).1
    } else {
        *v.select_nth_unstable(top.k - 1).1
    };
    let keep = |t: i64| if top.descending { t >= kth } else { t <= kth };
    values.iter().enumerate().filter(|(_, t)| keep(**t)).map(|(i, _)| i as u32).collect()
}

/// Marks an `events` scan under a TopK (a sort with a row limit) whose first key is
/// `timestamp` with [`EventsScanExec::with_time_top`]: directly under it, or under a
/// projection that passes the column through.
#[derive(Debug, Default)]
pub struct TimeTopRule;

impl PhysicalOptimizerRule for TimeTopRule {
    fn optimize(&self, plan: Arc<dyn ExecutionPlan>, _config: &ConfigOptions) -> Result<Arc<dyn ExecutionPlan>> {
        crate::replace_nodes(plan, |node| {
            let Some(sort) = node.downcast_ref::<SortExec>() else { return Ok(None) };
            let Some(k) = sort.fetch() else { return Ok(None) };
            let first = sort.expr().first();
            let Some(c) = first.expr.downcast_ref::<Column>() else { return Ok(None) };
            // The scan directly under the sort, or under a projection that passes `timestamp`
            // through (the `traces` view's).
            let (projection, scan, index) = match sort.input().downcast_ref::<ProjectionExec>() {
                Some(p) => match p.expr().get(c.index()).and_then(|e| e.expr.downcast_ref::<Column>()) {
                    Some(inner) => (Some(p), p.input(), inner.index()),
                    None => return Ok(None),
                },
                None => (None, sort.input(), c.index()),
            };
            let Some(scan) = scan.downcast_ref::<EventsScanExec>() else { return Ok(None) };
            let by_time = scan.schema().fields().get(index).is_some_and(|f| f.name() == "timestamp");
            if !by_time || scan.parts_top().is_some() {
                return Ok(None);
            }
            let top = TimeTop { descending: first.options.descending, k };
            let Some(marked) = scan.with_time_top(top)? else { return Ok(None) };
            // Same schema, partitions and (no) ordering: the nodes above keep their
            // properties, and the sort its dynamic filter, which the scan holds.
            let keep = || ReplaceChildrenOptions::new(ChildrenPropertiesMode::Keep);
            let mut child: Arc<dyn ExecutionPlan> = Arc::new(marked);
            if let Some(p) = projection {
                child = Arc::new(p.clone()).replace_children(vec![child], keep())?;
            }
            Arc::clone(node).replace_children(vec![child], keep()).map(Some)
        })
    }

    fn name(&self) -> &str {
        "time_top"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Every row among the best `k` (by the first key) is kept, and every dropped row
        /// has at least `k` rows strictly ahead of it.
        #[test]
        fn keeps_what_a_topk_may_need(
            values in proptest::collection::vec(-20i64..20, 0..300),
            k in 0usize..40,
            descending: bool,
        ) {
            let top = TimeTop { descending, k };
            let kept = best_positions(&values, top);
            prop_assert!(kept.windows(2).all(|w| w[0] < w[1]));
            let ahead = |a: i64, b: i64| if descending { a > b } else { a < b };
            let mut order: Vec<usize> = (0..values.len()).collect();
            order.sort_by(|a, b| if descending { values[*b].cmp(&values[*a]) } else { values[*a].cmp(&values[*b]) });
            for (rank, i) in order.iter().enumerate() {
                let in_top = k == 0 || rank < k;
                if in_top {
                    prop_assert!(kept.contains(&(*i as u32)), "row {} (rank {}) dropped", i, rank);
                }
            }
            for i in 0..values.len() {
                if !kept.contains(&(i as u32)) {
                    let better = values.iter().filter(|v| ahead(**v, values[i])).count();
                    prop_assert!(better >= k, "row {} dropped with only {} ahead", i, better);
                }
            }
        }
    }
}
