//! Planned statements kept between requests: the optimized logical plan of a statement, keyed
//! by its text and the row cut it was planned with, so that a repeated query (a dashboard's
//! panel, an alert rule) skips parsing, analysis and logical optimization (1-2 ms of a short
//! query) and goes straight to physical planning.
//!
//! Physical planning still runs for every execution, and the `events` scan takes its engine
//! snapshot there, so a cached plan reads the data as it is when it runs. A plan is kept only
//! if optimizing it again later would give the same plan: statements with functions whose
//! result depends on when they are planned (`now()`, `current_date`, `random()`: not
//! immutable, so the optimizer may fold them into constants) or with parameters are planned
//! anew each time.

use std::sync::Arc;

use arrow::array::RecordBatch;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::Result;
use datafusion::dataframe::DataFrame;
use datafusion::execution::context::SQLOptions;
use datafusion::execution::{SendableRecordBatchStream, SessionState};
use datafusion::logical_expr::{Expr, LogicalPlan, Volatility};
use datafusion::prelude::SessionContext;
use futures::StreamExt;
use quick_cache::sync::Cache;

/// Statements kept at most, over all tenant scopes (each plan is a few KB).
pub const DEFAULT_PLAN_CACHE_ENTRIES: usize = 512;

/// Which plan an entry is: the tenant scope of the session it was planned in (a plan holds
/// its session's tables, a tenant's scope among them, so it is reused only in that scope),
/// the statement text and the row cut.
type PlanKey = (Option<String>, String, usize);

/// Optimized plans of the sessions [`crate::session`] makes, for every tenant scope.
pub struct PlanCache {
    entries: Cache<PlanKey, Arc<LogicalPlan>>,
}

impl std::fmt::Debug for PlanCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlanCache").field("entries", &self.entries.len()).finish()
    }
}

/// Whether optimizing `plan` again would fold nothing differently: no function that is not
/// immutable and no parameter placeholder, subqueries included.
pub fn replannable(plan: &LogicalPlan) -> bool {
    let mut stable = true;
    let _ = plan.apply_with_subqueries(|node| {
        node.apply_expressions(|e| {
            e.apply(|e| {
                let fixed = match e {
                    Expr::ScalarFunction(f) => f.func.signature().volatility == Volatility::Immutable,
                    Expr::Placeholder(_) => false,
                    _ => true,
                };
                if fixed {
                    Ok(TreeNodeRecursion::Continue)
                } else {
                    stable = false;
                    Ok(TreeNodeRecursion::Stop)
                }
            })
        })
    });
    stable
}

/// `plan` with the cut of its first `n` rows planned in when it sorts its whole result
/// (`ORDER BY` without `LIMIT`, under any projections), so the sort keeps only the top rows.
/// Other plans are left as they are: a limit on top would change their shape (merge the
/// partitions below the final projection) and cost more than cutting the stream.
fn with_cut(state: &SessionState, plan: LogicalPlan, n: usize) -> Result<LogicalPlan> {
    let mut top = &plan;
    while let LogicalPlan::Projection(p) = top {
        top = p.input.as_ref();
    }
    if matches!(top, LogicalPlan::Sort(sort) if sort.fetch.is_none()) {
        let df = DataFrame::new(state.clone(), plan);
        return Ok(df.limit(0, Some(n))?.into_unoptimized_plan());
    }
    Ok(plan)
}

/// A data frame's batches, or one empty batch with its schema when there are none.
pub async fn with_schema(df: datafusion::dataframe::DataFrame) -> Result<Vec<RecordBatch>> {
    let schema = Arc::new(df.schema().as_arrow().clone());
    let mut batches = df.collect().await?;
    if batches.is_empty() {
        batches.push(RecordBatch::new_empty(schema));
    }
    Ok(batches)
}

/// The first `n` rows of `stream` (all of them if fewer); stops reading once they are in. At
/// least one batch: an empty one with the schema when there are no rows.
async fn first_rows(mut stream: SendableRecordBatchStream, n: usize) -> Result<Vec<RecordBatch>> {
    let mut out = vec![RecordBatch::new_empty(stream.schema())];
    let mut rows = 0;
    while rows < n {
        let Some(batch) = stream.next().await else { break };
        let batch = batch?;
        let take = batch.num_rows().min(n - rows);
        rows += take;
        out.push(if take < batch.num_rows() { batch.slice(0, take) } else { batch });
    }
    // The empty first batch carries the schema; it stays only when there are no rows.
    if out.len() > 1 {
        out.remove(0);
    }
    Ok(out)
}

impl PlanCache {
    pub fn new(entries: usize) -> PlanCache {
        PlanCache { entries: Cache::new(entries.max(1)) }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The first `n` rows of `sql`'s result on `ctx` (all of them if fewer), planned under
    /// `options` or taken from the cache; execution stops once they are in. `tenant` is the
    /// scope `ctx` was made for (the argument of [`crate::session`]). `EXPLAIN` runs as it
    /// is, uncut and uncached.
    pub async fn run(
        &self,
        tenant: Option<&str>,
        ctx: &SessionContext,
        sql: &str,
        options: SQLOptions,
        n: usize,
    ) -> Result<Vec<RecordBatch>> {
        let key = (tenant.map(str::to_owned), sql.to_owned(), n);
        let state = ctx.state();
        let plan = match self.entries.get(&key) {
            Some(plan) => plan,
            None => {
                let plan = state.create_logical_plan(sql).await?;
                options.verify_plan(&plan)?;
                // Statements that act (DDL, DML, SET: when `options` allow them) and EXPLAIN
                // run as the session runs them, uncut and uncached.
                if matches!(
                    plan,
                    LogicalPlan::Explain(_)
                        | LogicalPlan::Analyze(_)
                        | LogicalPlan::Ddl(_)
                        | LogicalPlan::Dml(_)
                        | LogicalPlan::Copy(_)
                        | LogicalPlan::Statement(_)
                ) {
                    return with_schema(ctx.execute_logical_plan(plan).await?).await;
                }
                let keep = replannable(&plan);
                let plan = Arc::new(state.optimize(&with_cut(&state, plan, n)?)?);
                if keep {
                    self.entries.insert(key, plan.clone());
                }
                plan
            }
        };
        let physical = state.query_planner().create_physical_plan(&plan, &state).await?;
        first_rows(datafusion::physical_plan::execute_stream(physical, ctx.task_ctx())?, n).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{AsArray, Int64Array};
    use arrow::datatypes::{DataType, Field, Int64Type, Schema};
    use datafusion::datasource::MemTable;
    use datafusion::prelude::SessionConfig;
    use proptest::prelude::*;

    /// The values of the first column of `batches`, in order.
    fn values(batches: &[RecordBatch]) -> Vec<i64> {
        batches.iter().flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec()).collect()
    }

    /// 100 rows (with repeats) in 7 batches over 3 partitions, as table `t`.
    fn session() -> Result<SessionContext> {
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
        Ok(ctx)
    }

    /// The whole result, then the cut one planned and then from the cache.
    async fn cut(sql: &str, n: usize) -> Result<(Vec<i64>, Vec<i64>, Vec<i64>, usize)> {
        let ctx = session()?;
        let full = values(&ctx.sql(sql).await?.collect().await?);
        let cache = PlanCache::new(8);
        let first = values(&cache.run(None, &ctx, sql, SQLOptions::new(), n).await?);
        let again = values(&cache.run(None, &ctx, sql, SQLOptions::new(), n).await?);
        Ok((full, first, again, cache.len()))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Sorted results are cut to their first `n` rows, unsorted ones to `n` of their rows,
        /// the same whether planned or taken from the cache.
        #[test]
        fn runs_keep_the_first_rows(n in 0usize..130, q in 0usize..5) {
            let sql = [
                "SELECT v FROM t ORDER BY v DESC",
                "SELECT w FROM (SELECT v * 2 AS w, v FROM t) ORDER BY v, w",
                "SELECT v FROM t WHERE v % 3 = 0 ORDER BY v LIMIT 20",
                "SELECT v FROM t",
                "SELECT v FROM t WHERE v > 10",
            ][q];
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
            let (full, got, again, cached) = rt.block_on(cut(sql, n)).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(cached, 1);
            if sql.contains("ORDER BY") {
                prop_assert_eq!(&got[..], &full[..n.min(full.len())]);
                prop_assert_eq!(&again[..], &got[..]);
            } else {
                for cut in [&got, &again] {
                    prop_assert_eq!(cut.len(), n.min(full.len()));
                    let mut rest = full.clone();
                    for v in cut.iter() {
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

    #[tokio::test]
    async fn plans_that_depend_on_when_they_run_are_not_kept() -> Result<()> {
        let ctx = session()?;
        let cache = PlanCache::new(8);
        for sql in [
            "SELECT v FROM t WHERE now() > to_timestamp(0)",
            "SELECT v, random() FROM t",
            "SELECT v FROM t WHERE v IN (SELECT v FROM t WHERE current_date() > DATE '2000-01-01')",
            "SELECT 1 FROM t WHERE v > $1",
        ] {
            let plan = ctx.state().create_logical_plan(sql).await?;
            assert!(!replannable(&plan), "{sql}");
        }
        for sql in ["SELECT v FROM t WHERE v > 3", "SELECT abs(v) FROM t WHERE v IN (SELECT v FROM t)"] {
            let plan = ctx.state().create_logical_plan(sql).await?;
            assert!(replannable(&plan), "{sql}");
        }
        let got = cache
            .run(None, &ctx, "SELECT count(*) FROM t WHERE now() > to_timestamp(0)", SQLOptions::new(), 10)
            .await?;
        assert_eq!(got.iter().map(RecordBatch::num_rows).sum::<usize>(), 1);
        assert!(cache.is_empty());
        // EXPLAIN and statements that act are run, never kept.
        cache.run(None, &ctx, "EXPLAIN SELECT v FROM t", SQLOptions::new(), 1).await?;
        cache.run(None, &ctx, "CREATE VIEW w AS SELECT v FROM t", SQLOptions::new(), 1).await?;
        assert!(cache.is_empty());
        let refused = SQLOptions::new().with_allow_ddl(false);
        assert!(cache.run(None, &ctx, "CREATE VIEW x AS SELECT v FROM t", refused, 1).await.is_err());
        assert_eq!(
            values(&cache.run(None, &ctx, "SELECT v FROM w ORDER BY v LIMIT 1", SQLOptions::new(), 5).await?),
            [0]
        );
        Ok(())
    }

    #[tokio::test]
    async fn a_plan_is_reused_only_in_its_own_scope() -> Result<()> {
        // Two sessions whose `t` holds different rows, as two tenants' sessions do.
        let scoped = |values: Vec<i64>| -> Result<SessionContext> {
            let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
            let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(Int64Array::from(values))])?;
            let ctx = SessionContext::new();
            ctx.register_table("t", Arc::new(MemTable::try_new(schema, vec![vec![batch]])?))?;
            Ok(ctx)
        };
        let (a, b) = (scoped(vec![1, 2, 3])?, scoped(vec![10, 20])?);
        let cache = PlanCache::new(8);
        let sql = "SELECT sum(v) FROM t";
        for _ in 0..2 {
            assert_eq!(values(&cache.run(Some("a"), &a, sql, SQLOptions::new(), 10).await?), [6]);
            assert_eq!(values(&cache.run(Some("b"), &b, sql, SQLOptions::new(), 10).await?), [30]);
        }
        assert_eq!(cache.len(), 2);
        Ok(())
    }
}
