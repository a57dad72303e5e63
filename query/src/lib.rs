//! SQL over ActiveMirrorOS: DataFusion sessions with the `events` table (index and time
//! pushdown, see [`provider`]) and the `traces` view from the contract, plus result formatting
//! helpers shared by the CLI and the HTTP API.

pub mod cache;
pub mod codes;
pub mod counts;
pub mod floatcmp;
pub mod functions;
pub mod point;
pub mod provider;
pub mod pushdown;
pub mod schema;

use std::sync::Arc;

use arrow::array::RecordBatch;
use datafusion::error::Result;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::{DataFrame, SessionConfig, SessionContext};
use engine::Engine;

pub use cache::{block_cache, text_page_cache, BlockCache, BlockCacheStats, TextPageCache};
pub use provider::{plan_scan, EventsTable, PruningStats, ScanPlan};
pub use pushdown::ScanPredicate;

/// `plan` with each node that `replace` has a replacement for replaced, bottom up (the body
/// of this crate's physical optimizer rules).
pub(crate) fn replace_nodes(
    plan: Arc<dyn ExecutionPlan>,
    replace: impl Fn(&Arc<dyn ExecutionPlan>) -> Result<Option<Arc<dyn ExecutionPlan>>>,
) -> Result<Arc<dyn ExecutionPlan>> {
    use datafusion::common::tree_node::{Transformed, TreeNode};
    plan.transform_up(|node| {
        Ok(match replace(&node)? {
            Some(replacement) => Transformed::yes(replacement),
            None => Transformed::no(node),
        })
    })
    .map(|t| t.data)
}

/// `node` as a partial aggregate with one grouping set directly over the `events` scan.
pub(crate) fn partial_over_scan(
    node: &Arc<dyn ExecutionPlan>,
) -> Option<(&datafusion::physical_plan::aggregates::AggregateExec, &provider::EventsScanExec)> {
    use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
    let agg = node.downcast_ref::<AggregateExec>()?;
    if *agg.mode() != AggregateMode::Partial || !agg.group_expr().is_single() {
        return None;
    }
    let scan = agg.input().downcast_ref::<provider::EventsScanExec>()?;
    Some((agg, scan))
}

/// The `traces` view: one row per event, the step folded into a struct so the contract's
/// example query (`events.semantics.intent`, `events.semantics.confidence`) runs as written.
pub const TRACES_VIEW: &str = "CREATE VIEW traces AS SELECT tenant, trace_id, agent_id, session_id, timestamp, \
    named_struct('span_id', span_id, 'parent_span_id', parent_span_id, 'kind', kind, 'name', name, \
    'content', content, 'duration_ms', duration_ms, 'status', status, \
    'semantics', named_struct('intent', intent, 'confidence', confidence)) AS events FROM events";

/// A SQL session over `engine`, optionally restricted to one tenant's rows.
pub async fn session(engine: Arc<Engine>, tenant: Option<String>) -> Result<SessionContext> {
    let config = SessionConfig::new().with_information_schema(true);
    let state = datafusion::execution::SessionStateBuilder::new()
        .with_config(config)
        .with_default_features()
        .with_physical_optimizer_rule(Arc::new(counts::IndexCountRule))
        .with_physical_optimizer_rule(Arc::new(codes::GroupCodesRule))
        .build();
    let ctx = SessionContext::new_with_state(state);
    ctx.register_udf(functions::UtcDateTrunc::udf());
    ctx.register_table("events", Arc::new(EventsTable::new(engine, tenant)))?;
    ctx.sql(TRACES_VIEW).await?.collect().await?;
    Ok(ctx)
}

/// The first `n` rows of `df`'s result (all of them if fewer), in as many batches as
/// execution gave. Execution stops once they are in. A plan that sorts its whole result
/// (`ORDER BY` without `LIMIT`) gets the cut planned in, so the sort keeps only the top rows;
/// any other plan runs as it is (a limit on top of it would change its shape, e.g. merge
/// its partitions below the final projection).
pub async fn collect_at_most(df: DataFrame, n: usize) -> Result<Vec<RecordBatch>> {
    use datafusion::logical_expr::LogicalPlan;
    use futures::StreamExt;
    let mut top = df.logical_plan();
    while let LogicalPlan::Projection(p) = top {
        top = p.input.as_ref();
    }
    if matches!(top, LogicalPlan::Sort(sort) if sort.fetch.is_none()) {
        return df.limit(0, Some(n))?.collect().await;
    }
    let mut stream = df.execute_stream().await?;
    let mut out = Vec::new();
    let mut rows = 0;
    while rows < n {
        let Some(batch) = stream.next().await else { break };
        let batch = batch?;
        let take = batch.num_rows().min(n - rows);
        rows += take;
        out.push(if take < batch.num_rows() { batch.slice(0, take) } else { batch });
    }
    Ok(out)
}

/// Run one statement and collect its result (a point lookup without the planner, see
/// [`point`]).
pub async fn run_sql(ctx: &SessionContext, sql: &str) -> Result<Vec<RecordBatch>> {
    if let Some(result) = point::try_run(ctx, sql).await {
        return result;
    }
    ctx.sql(sql).await?.collect().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{AsArray, Int64Array};
    use arrow::datatypes::{DataType, Field, Int64Type, Schema};
    use datafusion::datasource::MemTable;
    use proptest::prelude::*;

    /// The values of the first column of `batches`, in order.
    fn values(batches: &[RecordBatch]) -> Vec<i64> {
        batches.iter().flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec()).collect()
    }

    async fn cut(sql: &str, n: usize) -> Result<(Vec<i64>, Vec<i64>)> {
        // 100 rows (with repeats) in 7 batches over 3 partitions.
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        let batch = |range: std::ops::Range<i64>| {
            RecordBatch::try_new(
                schema.clone(),
                vec![Arc::new(Int64Array::from_iter_values(range.map(|v| v * 7 % 61)))],
            )
        };
        let parts = vec![
            vec![batch(0..10)?, batch(10..40)?],
            vec![batch(40..41)?, batch(41..70)?, batch(70..75)?],
            vec![batch(75..90)?, batch(90..100)?],
        ];
        let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(3));
        ctx.register_table("t", Arc::new(MemTable::try_new(schema.clone(), parts)?))?;
        let full = values(&ctx.sql(sql).await?.collect().await?);
        let got = values(&collect_at_most(ctx.sql(sql).await?, n).await?);
        Ok((full, got))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Sorted results are cut to their first `n` rows; unsorted ones to `n` of their rows.
        #[test]
        fn collect_at_most_keeps_the_first_rows(n in 0usize..130, q in 0usize..5) {
            let sql = [
                "SELECT v FROM t ORDER BY v DESC",
                "SELECT w FROM (SELECT v * 2 AS w, v FROM t) ORDER BY v, w",
                "SELECT v FROM t WHERE v % 3 = 0 ORDER BY v LIMIT 20",
                "SELECT v FROM t",
                "SELECT v FROM t WHERE v > 10",
            ][q];
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
            let (full, got) = rt.block_on(cut(sql, n)).map_err(|e| TestCaseError::fail(e.to_string()))?;
            if sql.contains("ORDER BY") {
                prop_assert_eq!(&got[..], &full[..n.min(full.len())]);
            } else {
                prop_assert_eq!(got.len(), n.min(full.len()));
                let mut rest = full.clone();
                for v in &got {
                    let at = rest.iter().position(|r| r == v);
                    prop_assert!(at.is_some(), "{} is not in the result", v);
                    if let Some(at) = at {
                        rest.swap_remove(at);
                    }
                }
            }
        }
    }
}
