//! Where one query's time goes in-process, with no HTTP: SQL to logical plan, logical plan to
//! physical plan (optimizers included), execution; and beside them `query::run_sql` as the
//! CLI and the HTTP API call it (point lookups skip the planner there), median and p99.
//! Medians over repeated runs.
//!
//! `query-phases --data-dir DIR [--runs N] "SQL" ...`

use std::sync::Arc;
use std::time::Instant;

use benches::{median, percentile};
use clap::Parser;

#[derive(Parser, Debug)]
#[command(about = "Time the planning and execution phases of queries against a data directory")]
struct Args {
    #[arg(long)]
    data_dir: std::path::PathBuf,
    #[arg(long, default_value_t = 300)]
    runs: usize,
    /// Queries to time (default: SELECT 1).
    queries: Vec<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (engine, _) = engine::Engine::open(&args.data_dir, engine::EngineConfig::default())?;
    let ctx = query::session(Arc::new(engine), None).await?;
    let queries = if args.queries.is_empty() { vec!["SELECT 1".to_owned()] } else { args.queries };
    println!(
        "{:>10} {:>10} {:>10} {:>10} {:>12} {:>12}  query",
        "sql us", "plan us", "exec us", "total us", "run_sql us", "run_sql p99"
    );
    for q in queries {
        let (mut sql, mut plan, mut exec, mut total, mut run) = (vec![], vec![], vec![], vec![], vec![]);
        for _ in 0..args.runs.max(1) {
            let t0 = Instant::now();
            let df = ctx.sql(&q).await?;
            let t1 = Instant::now();
            let (state, logical) = df.into_parts();
            let physical = state.create_physical_plan(&logical).await?;
            let t2 = Instant::now();
            let out = datafusion::physical_plan::collect(physical, ctx.task_ctx()).await?;
            let t3 = Instant::now();
            std::hint::black_box(out);
            sql.push((t1 - t0).as_secs_f64() * 1e6);
            plan.push((t2 - t1).as_secs_f64() * 1e6);
            exec.push((t3 - t2).as_secs_f64() * 1e6);
            total.push((t3 - t0).as_secs_f64() * 1e6);
            let t4 = Instant::now();
            std::hint::black_box(query::run_sql(&ctx, &q).await?);
            run.push(t4.elapsed().as_secs_f64() * 1e6);
        }
        println!(
            "{:>10.0} {:>10.0} {:>10.0} {:>10.0} {:>12.0} {:>12.0}  {q}",
            median(&mut sql),
            median(&mut plan),
            median(&mut exec),
            median(&mut total),
            median(&mut run),
            percentile(&mut run, 0.99)
        );
    }
    Ok(())
}
