//! SQL over ActiveMirrorOS: DataFusion sessions with the `events` table (index and time
//! pushdown, see [`provider`]) and the `traces` view from the contract, plus result formatting
//! helpers shared by the CLI and the HTTP API.

pub mod archive;
pub mod cache;
pub mod codes;
pub mod counts;
pub mod floatcmp;
pub mod functions;
pub mod json;
pub mod limits;
pub mod packed;
pub mod plans;
pub mod point;
pub mod provider;
pub mod pushdown;
pub mod runtime;
pub mod schema;
pub mod strset;
pub mod topk;

use std::sync::Arc;

use arrow::array::RecordBatch;
use datafusion::error::Result;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::{SessionConfig, SessionContext};
use engine::Engine;

pub use cache::{
    block_cache, segment_index_cache, text_index_cache, text_page_cache, BlockCache, BlockCacheStats,
    SegmentIndexCache, TextIndexCache, TextPageCache,
};
pub use provider::{plan_scan, EventsTable, PruningStats, ScanPlan};
pub use pushdown::ScanPredicate;

/// The processors this process may use, read once. `std::thread::available_parallelism`
/// reads the cgroup's CPU quota from `/proc` and `/sys` at every call: asked per request, it
/// was a tenth of the server's CPU on a loop of one-trace lookups.
pub fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get))
}

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
    session_with_runtime(engine, tenant, Arc::new(datafusion::execution::runtime_env::RuntimeEnv::default())).await
}

/// A runtime whose queries together may hold at most `bytes` of memory in operators that
/// account for it (joins, sorts, aggregations); past it they spill to disk where they can, or
/// fail with "Resources exhausted", instead of growing the process without bound.
pub fn bounded_runtime(bytes: usize) -> Result<Arc<datafusion::execution::runtime_env::RuntimeEnv>> {
    datafusion::execution::runtime_env::RuntimeEnvBuilder::new().with_memory_limit(bytes, 1.0).build_arc()
}

/// [`session`] on `runtime` (its memory pool, disk manager and caches), so sessions of every
/// tenant scope can share one memory budget.
pub async fn session_with_runtime(
    engine: Arc<Engine>,
    tenant: Option<String>,
    runtime: Arc<datafusion::execution::runtime_env::RuntimeEnv>,
) -> Result<SessionContext> {
    let config = SessionConfig::new().with_information_schema(true);
    let state = datafusion::execution::SessionStateBuilder::new()
        .with_config(config)
        .with_runtime_env(runtime)
        .with_default_features()
        .with_physical_optimizer_rule(Arc::new(counts::IndexCountRule))
        .with_physical_optimizer_rule(Arc::new(codes::GroupCodesRule))
        .with_physical_optimizer_rule(Arc::new(topk::TimeTopRule))
        .build();
    let ctx = SessionContext::new_with_state(state);
    ctx.register_udf(functions::UtcDateTrunc::udf());
    ctx.register_table("events", Arc::new(EventsTable::new(engine, tenant)))?;
    ctx.sql(TRACES_VIEW).await?.collect().await?;
    Ok(ctx)
}

/// Run one statement and collect its result (a point lookup without the planner, see
/// [`point`]).
pub async fn run_sql(ctx: &SessionContext, sql: &str) -> Result<Vec<RecordBatch>> {
    limits::check_statement(sql)?;
    if let Some(result) = point::try_run(ctx, sql).await {
        return result;
    }
    plans::with_schema(ctx.sql(sql).await?).await
}

#[cfg(test)]
mod tests {
    #[test]
    fn cores_are_the_available_parallelism_read_once() {
        let want = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        assert_eq!(super::cores(), want);
        assert_eq!(super::cores(), want, "the second call answers the same from the cache");
    }
}
