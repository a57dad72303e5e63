//! Point lookups without the planner: a query of the shape
//!
//! ```sql
//! SELECT <columns> | * FROM events
//! WHERE trace_id = '<id>' [AND <indexed column> = '<value>' ...]
//! [ORDER BY <column> [ASC | DESC] [NULLS FIRST | LAST], ...] [LIMIT n] [OFFSET m]
//! ```
//!
//! is answered straight from the trace directory and the bitmaps. DataFusion's SQL planning
//! and optimizer passes cost 0.5-0.8 ms for such a query, several times the lookup itself.
//! This module recognizes the shape from the parsed statement ([`PointQuery::parse`]). Every
//! other statement, and any clause it does not recognize, goes to DataFusion as before. The
//! answer is the one DataFusion gives: the same scan units and decoders, DataFusion's
//! identifier and null-ordering rules, and only filters the scan applies exactly
//! ([`crate::pushdown::is_exact`]). The differential suite runs these queries on both paths.

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, UInt32Array};
use arrow::compute::{SortColumn, SortOptions};
use datafusion::catalog::TableProvider;
use datafusion::common::Result;
use datafusion::config::{ConfigOptions, Dialect};
use datafusion::logical_expr::{col, lit, Expr};
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{
    self, BinaryOperator, GroupByExpr, Ident, LimitClause, ObjectNamePart, OrderByKind, SelectFlavor, SelectItem,
    SetExpr, Statement, TableFactor, TableWithJoins, Value,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;
use segments::ColumnId;

use crate::provider::{read_unit, EventsTable};

/// A recognized point lookup.
#[derive(Debug, Clone, PartialEq)]
pub struct PointQuery {
    /// Output columns, in order.
    pub columns: Vec<ColumnId>,
    /// `column = 'value'` filters, each applied exactly by the scan; one is on `trace_id`.
    pub filters: Vec<Expr>,
    /// Sort keys as written; ties keep the scan's order.
    pub order: Vec<(ColumnId, SortOptions)>,
    pub limit: Option<usize>,
    pub offset: usize,
}

/// The column an identifier names, under DataFusion's normalization (unquoted identifiers
/// are lowercased).
fn column(id: &Ident) -> Option<ColumnId> {
    match id.quote_style {
        Some(_) => ColumnId::from_name(&id.value),
        None => ColumnId::from_name(&id.value.to_ascii_lowercase()),
    }
}

/// A non-negative integer literal.
fn count(e: &ast::Expr) -> Option<usize> {
    match e {
        ast::Expr::Value(v) => match &v.value {
            Value::Number(n, false) => n.parse().ok(),
            _ => None,
        },
        _ => None,
    }
}

/// `column = 'text'` (either side) as the column and the text.
fn equality(e: &ast::Expr) -> Option<(ColumnId, String)> {
    let ast::Expr::BinaryOp { left, op: BinaryOperator::Eq, right } = e else { return None };
    let text = |e: &ast::Expr| match e {
        ast::Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) => Some(s.clone()),
            _ => None,
        },
        _ => None,
    };
    match (left.as_ref(), right.as_ref()) {
        (ast::Expr::Identifier(id), other) | (other, ast::Expr::Identifier(id)) => Some((column(id)?, text(other)?)),
        _ => None,
    }
}

/// The `=` comparisons of a conjunction (`a AND b AND ...`, no parentheses); `None` if any
/// part is something else.
fn conjuncts(e: &ast::Expr, out: &mut Vec<(ColumnId, String)>) -> Option<()> {
    match e {
        ast::Expr::BinaryOp { left, op: BinaryOperator::And, right } => {
            conjuncts(left, out)?;
            conjuncts(right, out)
        }
        other => {
            out.push(equality(other)?);
            Some(())
        }
    }
}

impl PointQuery {
    /// The point lookup `sql` states, if it has exactly the shape in the module docs; `None`
    /// for every other statement (including ones that do not parse).
    pub fn parse(sql: &str) -> Option<PointQuery> {
        // Most statements are not lookups: skip parsing them twice.
        if !sql.to_ascii_lowercase().contains("trace_id") {
            return None;
        }
        let mut statements = Parser::parse_sql(&GenericDialect {}, sql).ok()?;
        let statement = statements.pop().filter(|_| statements.is_empty())?;
        let Statement::Query(query) = &statement else { return None };
        // Every field is named (no `..`), so a clause a new parser version adds must be
        // considered here before this compiles again.
        let ast::Query {
            with: None,
            body,
            order_by,
            limit_clause,
            fetch: None,
            locks,
            for_clause: None,
            settings: None,
            format_clause: None,
            pipe_operators,
        } = query.as_ref()
        else {
            return None;
        };
        let SetExpr::Select(select) = body.as_ref() else { return None };
        let ast::Select {
            select_token: _,
            optimizer_hints,
            distinct: None,
            select_modifiers: None,
            top: None,
            top_before_distinct: _,
            projection,
            exclude: None,
            into: None,
            from,
            lateral_views,
            prewhere: None,
            selection: Some(selection),
            connect_by,
            group_by: GroupByExpr::Expressions(group_by, group_by_modifiers),
            cluster_by,
            distribute_by,
            sort_by,
            having: None,
            named_window,
            qualify: None,
            window_before_qualify: _,
            value_table_mode: None,
            flavor: SelectFlavor::Standard,
        } = select.as_ref()
        else {
            return None;
        };
        let no_other_clauses = locks.is_empty()
            && pipe_operators.is_empty()
            && optimizer_hints.is_empty()
            && lateral_views.is_empty()
            && connect_by.is_empty()
            && group_by.is_empty()
            && group_by_modifiers.is_empty()
            && cluster_by.is_empty()
            && distribute_by.is_empty()
            && sort_by.is_empty()
            && named_window.is_empty();
        if !no_other_clauses {
            return None;
        }

        let mut columns = Vec::new();
        for item in projection {
            match item {
                SelectItem::Wildcard(options) if *options == ast::WildcardAdditionalOptions::default() => {
                    columns.extend_from_slice(&ColumnId::ALL)
                }
                SelectItem::UnnamedExpr(ast::Expr::Identifier(id)) => columns.push(column(id)?),
                _ => return None,
            }
        }
        // DataFusion refuses a column named twice; leave that error to it.
        let mut seen = columns.clone();
        seen.sort();
        seen.dedup();
        if seen.len() != columns.len() {
            return None;
        }

        let [TableWithJoins { relation, joins }] = from.as_slice() else { return None };
        let TableFactor::Table {
            name,
            alias: None,
            args: None,
            with_hints,
            version: None,
            with_ordinality: false,
            partitions,
            json_path: None,
            sample: None,
            index_hints,
        } = relation
        else {
            return None;
        };
        let [ObjectNamePart::Identifier(table)] = name.0.as_slice() else { return None };
        let table_name = match table.quote_style {
            Some(_) => table.value.clone(),
            None => table.value.to_ascii_lowercase(),
        };
        let plain_table = joins.is_empty() && with_hints.is_empty() && partitions.is_empty() && index_hints.is_empty();
        if table_name != "events" || !plain_table {
            return None;
        }

        let mut equalities = Vec::new();
        conjuncts(selection, &mut equalities)?;
        let filters: Vec<Expr> = equalities.iter().map(|(c, v)| col(c.name()).eq(lit(v.as_str()))).collect();
        if !equalities.iter().any(|(c, _)| *c == ColumnId::TraceId) || !filters.iter().all(crate::pushdown::is_exact) {
            return None;
        }

        let mut order = Vec::new();
        if let Some(order_by) = order_by {
            let OrderByKind::Expressions(exprs) = &order_by.kind else { return None };
            if order_by.interpolate.is_some() {
                return None;
            }
            for e in exprs {
                let ast::Expr::Identifier(id) = &e.expr else { return None };
                let c = column(id)?;
                if e.with_fill.is_some() || c == ColumnId::Attributes {
                    return None;
                }
                // DataFusion's default null ordering (`nulls_max`): NULL sorts as the largest.
                let descending = e.options.asc == Some(false);
                let nulls_first = e.options.nulls_first.unwrap_or(descending);
                order.push((c, SortOptions { descending, nulls_first }));
            }
        }

        let (mut limit, mut offset) = (None, 0);
        match limit_clause {
            None => {}
            Some(LimitClause::LimitOffset { limit: l, offset: o, limit_by }) if limit_by.is_empty() => {
                if let Some(l) = l {
                    limit = Some(count(l)?);
                }
                if let Some(o) = o {
                    offset = count(&o.value)?;
                }
            }
            Some(_) => return None,
        }
        Some(PointQuery { columns, filters, order, limit, offset })
    }

    /// Run the lookup on `table`: the rows its filters select, sorted, cut to the limit.
    /// Empty results have no batches, as DataFusion's.
    pub fn execute(&self, table: &EventsTable) -> Result<Vec<RecordBatch>> {
        let schema = table.schema();
        // Decoded: the output columns, then the sort columns not among them.
        let mut read = self.columns.clone();
        for (c, _) in &self.order {
            if !read.contains(c) {
                read.push(*c);
            }
        }
        let indices: Vec<usize> = read.iter().map(|c| c.index()).collect();
        let read_schema = Arc::new(schema.project(&indices)?);
        let plan = table.plan(&self.filters);
        let mut batches = Vec::new();
        for unit in &plan.units {
            if let Some(b) = read_unit(unit, &read, &read_schema, None, &[])? {
                batches.push(b);
            }
        }
        let rows = arrow::compute::concat_batches(&read_schema, &batches)?;
        let end = self.limit.map_or(rows.num_rows(), |l| self.offset.saturating_add(l).min(rows.num_rows()));
        let start = self.offset.min(end);
        let rows = if self.order.is_empty() {
            rows.slice(start, end - start)
        } else {
            let mut keys: Vec<SortColumn> = self
                .order
                .iter()
                .map(|(c, options)| {
                    let at = read.iter().position(|r| r == c).unwrap_or_default();
                    SortColumn { values: rows.column(at).clone(), options: Some(*options) }
                })
                .collect();
            // Scan order breaks ties, so the result does not depend on the sort algorithm.
            let position: ArrayRef = Arc::new(UInt32Array::from_iter_values(0..rows.num_rows() as u32));
            keys.push(SortColumn { values: position, options: None });
            let sorted = arrow::compute::lexsort_to_indices(&keys, Some(end))?;
            let sorted = sorted.slice(start, end - start);
            arrow::compute::take_record_batch(&rows, &sorted)?
        };
        let output: Vec<usize> = (0..self.columns.len()).collect();
        let rows = rows.project(&output)?;
        Ok(if rows.num_rows() == 0 { Vec::new() } else { vec![rows] })
    }
}

/// Whether `options` read SQL the way [`PointQuery::parse`] assumes (DataFusion's defaults).
fn default_sql_rules(options: &ConfigOptions) -> bool {
    let p = &options.sql_parser;
    p.enable_ident_normalization && p.dialect == Dialect::Generic && p.default_null_ordering == "nulls_max"
}

/// Answer `sql` as a point lookup on `ctx`'s `events` table, if it is one and that table is
/// ours; `None` sends it to DataFusion.
pub async fn try_run(ctx: &SessionContext, sql: &str) -> Option<Result<Vec<RecordBatch>>> {
    let query = PointQuery::parse(sql)?;
    let default_rules = default_sql_rules(ctx.state_ref().read().config_options());
    if !default_rules {
        return None;
    }
    let provider = ctx.table_provider("events").await.ok()?;
    let table = provider.downcast_ref::<EventsTable>()?;
    Some(query.execute(table))
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &str = "0123456789abcdef0123456789abcdef";

    fn parse(sql: &str) -> Option<PointQuery> {
        PointQuery::parse(&sql.replace("{T}", T))
    }

    fn asc() -> SortOptions {
        SortOptions { descending: false, nulls_first: false }
    }

    #[test]
    fn the_trace_lookup_shapes_are_recognized() {
        let q = parse("SELECT span_id, timestamp, kind FROM events WHERE trace_id = '{T}' ORDER BY timestamp")
            .expect("point");
        assert_eq!(q.columns, vec![ColumnId::SpanId, ColumnId::Timestamp, ColumnId::Kind]);
        assert_eq!(q.filters, vec![col("trace_id").eq(lit(T))]);
        assert_eq!(q.order, vec![(ColumnId::Timestamp, asc())]);
        assert_eq!((q.limit, q.offset), (None, 0));

        let q =
            parse("select * from EVENTS where '{T}' = Trace_Id and tenant = 'acme' limit 3 offset 2;").expect("point");
        assert_eq!(q.columns, ColumnId::ALL.to_vec());
        assert_eq!(q.filters.len(), 2);
        assert_eq!((q.limit, q.offset), (Some(3), 2));

        // Null ordering as DataFusion's default (`nulls_max`), unless written.
        let q = parse(
            "SELECT name FROM events WHERE trace_id = '{T}' \
             ORDER BY intent DESC, model, confidence DESC NULLS LAST, name NULLS FIRST",
        )
        .expect("point");
        let o = |descending, nulls_first| SortOptions { descending, nulls_first };
        assert_eq!(
            q.order,
            vec![
                (ColumnId::Intent, o(true, true)),
                (ColumnId::Model, o(false, false)),
                (ColumnId::Confidence, o(true, false)),
                (ColumnId::Name, o(false, true)),
            ]
        );
        // A quoted identifier keeps its case.
        assert!(parse(r#"SELECT "span_id" FROM "events" WHERE "trace_id" = '{T}'"#).is_some());
        assert!(parse(r#"SELECT "Span_id" FROM events WHERE trace_id = '{T}'"#).is_none());
    }

    #[test]
    fn everything_else_goes_to_datafusion() {
        for sql in [
            // Not a lookup of one trace, or a filter the scan does not apply exactly.
            "SELECT span_id FROM events",
            "SELECT span_id FROM events WHERE tenant = 'acme'",
            "SELECT span_id FROM events WHERE trace_id = 'not-hex'",
            "SELECT span_id FROM events WHERE trace_id = '0123456789ABCDEF0123456789ABCDEF'",
            "SELECT span_id FROM events WHERE trace_id = '{T}' AND confidence = '0.5'",
            "SELECT span_id FROM events WHERE trace_id = '{T}' OR kind = 'output'",
            "SELECT span_id FROM events WHERE (trace_id = '{T}')",
            "SELECT span_id FROM events WHERE trace_id = '{T}' AND kind != 'output'",
            "SELECT span_id FROM events WHERE trace_id IN ('{T}')",
            // Other clauses and forms.
            "SELECT DISTINCT span_id FROM events WHERE trace_id = '{T}'",
            "SELECT span_id AS s FROM events WHERE trace_id = '{T}'",
            "SELECT span_id, span_id FROM events WHERE trace_id = '{T}'",
            "SELECT events.span_id FROM events WHERE trace_id = '{T}'",
            "SELECT upper(span_id) FROM events WHERE trace_id = '{T}'",
            "SELECT * EXCLUDE (content) FROM events WHERE trace_id = '{T}'",
            "SELECT nope FROM events WHERE trace_id = '{T}'",
            "SELECT span_id FROM events e WHERE trace_id = '{T}'",
            "SELECT span_id FROM public.events WHERE trace_id = '{T}'",
            "SELECT span_id FROM traces WHERE trace_id = '{T}'",
            "SELECT span_id FROM events, events2 WHERE trace_id = '{T}'",
            "SELECT span_id FROM events JOIN x ON true WHERE trace_id = '{T}'",
            "SELECT span_id FROM events WHERE trace_id = '{T}' GROUP BY span_id",
            "SELECT span_id FROM events WHERE trace_id = '{T}' GROUP BY ALL",
            "SELECT TOP 2 span_id FROM events WHERE trace_id = '{T}'",
            "SELECT span_id FROM events TABLESAMPLE BERNOULLI (50) WHERE trace_id = '{T}'",
            "SELECT span_id FROM events WHERE trace_id = '{T}' QUALIFY true",
            "SELECT span_id FROM events WHERE trace_id = '{T}' WINDOW w AS (ORDER BY timestamp)",
            "SELECT span_id FROM events WHERE trace_id = '{T}' HAVING true",
            "SELECT span_id FROM events WHERE trace_id = '{T}' ORDER BY 1",
            "SELECT span_id FROM events WHERE trace_id = '{T}' ORDER BY upper(name)",
            "SELECT span_id FROM events WHERE trace_id = '{T}' ORDER BY attributes",
            "SELECT span_id FROM events WHERE trace_id = '{T}' LIMIT 1 + 1",
            "SELECT span_id FROM events WHERE trace_id = '{T}' LIMIT -1",
            "SELECT span_id FROM events WHERE trace_id = '{T}' LIMIT 2, 3",
            "WITH x AS (SELECT 1) SELECT span_id FROM events WHERE trace_id = '{T}'",
            "SELECT span_id FROM events WHERE trace_id = '{T}' UNION SELECT span_id FROM events",
            "EXPLAIN SELECT span_id FROM events WHERE trace_id = '{T}'",
            "SELECT span_id FROM events WHERE trace_id = '{T}'; SELECT 1",
            "SELECT span_id FROM events WHERE trace_id = '{T}' FETCH FIRST 2 ROWS ONLY",
            "SELECT span_id FROM events WHERE trace_id = E'{T}'",
            "SELECT span_id FROM",
        ] {
            assert_eq!(parse(sql), None, "{sql}");
        }
    }
}
