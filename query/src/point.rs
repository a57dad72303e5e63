//! Point lookups without the planner: a query of the shape
//!
//! ```sql
//! SELECT <columns> | * FROM events | traces
//! WHERE trace_id = '<id>' [AND <indexed column> = '<value>' ...]
//! [ORDER BY <column> [ASC | DESC] [NULLS FIRST | LAST], ...] [LIMIT n] [OFFSET m]
//! ```
//!
//! is answered straight from the trace directory and the bitmaps (on the `traces` view, the
//! columns are the view's: its step struct `events` is assembled from the step's columns as
//! the view's schema lays it out, and conditions and sort keys name its plain columns). DataFusion's SQL planning
//! and optimizer passes cost 0.5-0.8 ms for such a query, several times the lookup itself.
//! This module recognizes the shape from the parsed statement ([`PointQuery::parse`]). Every
//! other statement, and any clause it does not recognize, goes to DataFusion as before. The
//! answer is the one DataFusion gives: the same scan units and decoders, DataFusion's
//! identifier and null-ordering rules, and only filters the scan applies exactly
//! ([`crate::pushdown::is_exact`]). The differential suite runs these queries on both paths.

use std::sync::{Arc, OnceLock};

use arrow::array::{ArrayRef, RecordBatch, StructArray, UInt32Array};
use arrow::compute::{SortColumn, SortOptions};
use arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef};
use datafusion::catalog::TableProvider;
use datafusion::common::{DataFusionError, Result};
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

/// The table a lookup reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Events,
    /// The `traces` view ([`crate::TRACES_VIEW`]).
    Traces,
}

/// The plain columns of the `traces` view, in its order; its last column is the step struct.
const TRACES_COLUMNS: [ColumnId; 5] =
    [ColumnId::Tenant, ColumnId::TraceId, ColumnId::AgentId, ColumnId::SessionId, ColumnId::Timestamp];

/// The step struct of the `traces` view.
const TRACES_STEP: &str = "events";

/// One output column of a lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Column(ColumnId),
    /// The `traces` view's step struct.
    Step,
}

impl Output {
    fn name(&self) -> &'static str {
        match self {
            Output::Column(c) => c.name(),
            Output::Step => TRACES_STEP,
        }
    }
}

impl Target {
    /// The table's name in SQL.
    pub fn name(&self) -> &'static str {
        match self {
            Target::Events => "events",
            Target::Traces => "traces",
        }
    }

    /// The plain column `id` names in this table, under DataFusion's normalization.
    fn column(&self, id: &Ident) -> Option<ColumnId> {
        let c = column(id)?;
        (*self == Target::Events || TRACES_COLUMNS.contains(&c)).then_some(c)
    }

    /// The output column `id` names in this table.
    fn output(&self, id: &Ident) -> Option<Output> {
        let step = match id.quote_style {
            Some(_) => id.value == TRACES_STEP,
            None => id.value.eq_ignore_ascii_case(TRACES_STEP),
        };
        match self {
            Target::Traces if step => Some(Output::Step),
            _ => self.column(id).map(Output::Column),
        }
    }

    /// The columns of `SELECT *`.
    fn all(&self) -> Vec<Output> {
        match self {
            Target::Events => ColumnId::ALL.iter().map(|c| Output::Column(*c)).collect(),
            Target::Traces => TRACES_COLUMNS.iter().map(|c| Output::Column(*c)).chain([Output::Step]).collect(),
        }
    }
}

/// A recognized point lookup.
#[derive(Debug, Clone, PartialEq)]
pub struct PointQuery {
    pub target: Target,
    /// Output columns, in order.
    pub outputs: Vec<Output>,
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

/// `column = 'text'` (either side) as the column of `target` and the text.
fn equality(target: Target, e: &ast::Expr) -> Option<(ColumnId, String)> {
    let ast::Expr::BinaryOp { left, op: BinaryOperator::Eq, right } = e else { return None };
    let text = |e: &ast::Expr| match e {
        ast::Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) => Some(s.clone()),
            _ => None,
        },
        _ => None,
    };
    match (left.as_ref(), right.as_ref()) {
        (ast::Expr::Identifier(id), other) | (other, ast::Expr::Identifier(id)) => {
            Some((target.column(id)?, text(other)?))
        }
        _ => None,
    }
}

/// The `=` comparisons of a conjunction (`a AND b AND ...`, no parentheses); `None` if any
/// part is something else.
fn conjuncts(target: Target, e: &ast::Expr, out: &mut Vec<(ColumnId, String)>) -> Option<()> {
    match e {
        ast::Expr::BinaryOp { left, op: BinaryOperator::And, right } => {
            conjuncts(target, left, out)?;
            conjuncts(target, right, out)
        }
        other => {
            out.push(equality(target, other)?);
            Some(())
        }
    }
}

impl PointQuery {
    /// The point lookup `sql` states, if it has exactly the shape in the module docs; `None`
    /// for every other statement (including ones that do not parse).
    pub fn parse(sql: &str) -> Option<PointQuery> {
        // Most statements are not lookups: skip parsing them twice.
        if !mentions_trace_id(sql) {
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
        let target = match table_name.as_str() {
            "events" => Target::Events,
            "traces" => Target::Traces,
            _ => return None,
        };
        if !plain_table {
            return None;
        }

        let mut outputs = Vec::new();
        for item in projection {
            match item {
                SelectItem::Wildcard(options) if *options == ast::WildcardAdditionalOptions::default() => {
                    outputs.extend(target.all())
                }
                SelectItem::UnnamedExpr(ast::Expr::Identifier(id)) => outputs.push(target.output(id)?),
                _ => return None,
            }
        }
        // DataFusion refuses a column named twice; leave that error to it.
        let mut seen: Vec<&str> = outputs.iter().map(Output::name).collect();
        seen.sort_unstable();
        seen.dedup();
        if seen.len() != outputs.len() {
            return None;
        }

        let mut equalities = Vec::new();
        conjuncts(target, selection, &mut equalities)?;
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
                let c = target.column(id)?;
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
        Some(PointQuery { target, outputs, filters, order, limit, offset })
    }

    /// Run the lookup on `table`: the rows its filters select, sorted, cut to the limit, as
    /// the columns of `schema` (the target table's: `events`' own, or the `traces` view's).
    /// Empty results have no batches, as DataFusion's.
    pub fn execute(&self, table: &EventsTable, schema: &SchemaRef) -> Result<Vec<RecordBatch>> {
        let fields: Vec<FieldRef> = self
            .outputs
            .iter()
            .map(|o| schema.field_with_name(o.name()).map(|f| Arc::new(f.clone())))
            .collect::<Result<_, _>>()?;
        // Decoded: the output columns (a struct's leaves), then the sort columns not among them.
        let mut read: Vec<ColumnId> = Vec::new();
        for (output, field) in self.outputs.iter().zip(&fields) {
            match output {
                Output::Column(c) => read.push(*c),
                Output::Step => leaves(field, &mut read)?,
            }
        }
        for (c, _) in &self.order {
            if !read.contains(c) {
                read.push(*c);
            }
        }
        let events = table.schema();
        let indices: Vec<usize> = read.iter().map(|c| c.index()).collect();
        let read_schema = Arc::new(events.project(&indices)?);
        let plan = table.plan(&self.filters)?;
        let mut batches = Vec::new();
        for unit in &plan.units {
            if let Some(b) = read_unit(unit, &read, &read_schema, None, None, None, &[])? {
                batches.push(b);
            }
        }
        let rows = arrow::compute::concat_batches(&read_schema, &batches)?;
        let end = self.limit.map_or(rows.num_rows(), |l| self.offset.saturating_add(l).min(rows.num_rows()));
        let start = self.offset.min(end);
        let column = |rows: &RecordBatch, c: &ColumnId| {
            let at = read.iter().position(|r| r == c);
            at.map(|at| rows.column(at).clone())
                .ok_or_else(|| DataFusionError::Internal(format!("point lookup: column {} not read", c.name())))
        };
        let rows = if self.order.is_empty() {
            rows.slice(start, end - start)
        } else {
            let mut keys = Vec::with_capacity(self.order.len() + 1);
            for (c, options) in &self.order {
                keys.push(SortColumn { values: column(&rows, c)?, options: Some(*options) });
            }
            // Scan order breaks ties, so the result does not depend on the sort algorithm.
            let position: ArrayRef = Arc::new(UInt32Array::from_iter_values(0..rows.num_rows() as u32));
            keys.push(SortColumn { values: position, options: None });
            let sorted = arrow::compute::lexsort_to_indices(&keys, Some(end))?;
            let sorted = sorted.slice(start, end - start);
            arrow::compute::take_record_batch(&rows, &sorted)?
        };
        if rows.num_rows() == 0 {
            // No rows, still the result's columns: clients print the header.
            return Ok(vec![RecordBatch::new_empty(Arc::new(Schema::new(fields)))]);
        }
        let mut arrays = Vec::with_capacity(self.outputs.len());
        for (output, field) in self.outputs.iter().zip(&fields) {
            arrays.push(match output {
                Output::Column(c) => column(&rows, c)?,
                Output::Step => assemble(field, &|c| column(&rows, &c))?,
            });
        }
        Ok(vec![RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)?])
    }
}

/// The `events` columns a struct field of plain columns is made of, by field name, added to
/// `out`.
fn leaves(field: &Field, out: &mut Vec<ColumnId>) -> Result<()> {
    match field.data_type() {
        DataType::Struct(children) => children.iter().try_for_each(|f| leaves(f, out)),
        _ => {
            let c = ColumnId::from_name(field.name()).ok_or_else(|| {
                DataFusionError::Plan(format!("point lookup: no events column for field `{}`", field.name()))
            })?;
            if !out.contains(&c) {
                out.push(c);
            }
            Ok(())
        }
    }
}

/// `field` (a struct of plain columns, nested structs included) built from the columns
/// `column` gives, without nulls of its own, as `named_struct` builds it.
fn assemble(field: &Field, column: &dyn Fn(ColumnId) -> Result<ArrayRef>) -> Result<ArrayRef> {
    match field.data_type() {
        DataType::Struct(children) => {
            let arrays = children.iter().map(|f| assemble(f, column)).collect::<Result<Vec<_>>>()?;
            Ok(Arc::new(StructArray::try_new(children.clone(), arrays, None)?))
        }
        _ => {
            let c = ColumnId::from_name(field.name()).ok_or_else(|| {
                DataFusionError::Plan(format!("point lookup: no events column for field `{}`", field.name()))
            })?;
            column(c)
        }
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
    let query = parsed(sql)?;
    let default_rules = default_sql_rules(ctx.state_ref().read().config_options());
    if !default_rules {
        return None;
    }
    let provider = ctx.table_provider("events").await.ok()?;
    let table = provider.downcast_ref::<EventsTable>()?;
    let schema = match query.target {
        Target::Events => table.schema(),
        Target::Traces => {
            // Only the view this crate defines: its plain columns, then the step struct.
            let schema = ctx.table_provider("traces").await.ok()?.schema();
            let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            let want: Vec<&str> = TRACES_COLUMNS.iter().map(|c| c.name()).chain([TRACES_STEP]).collect();
            if names != want {
                return None;
            }
            schema
        }
    };
    Some(query.execute(table, &schema))
}

/// Statements whose lookup shape is remembered ([`parsed`]).
const PARSED_ENTRIES: usize = 1024;

/// Longest statement remembered, in bytes, so that the cache stays a few megabytes.
const PARSED_MAX_BYTES: usize = 4096;

/// [`PointQuery::parse`], remembered by statement text: a dashboard repeats its statements,
/// and parsing a lookup took about 4% of the server's time on a loop of one-trace queries
/// (statements that mention `trace_id` but are not lookups are parsed again by DataFusion).
fn parsed(sql: &str) -> Option<Arc<PointQuery>> {
    static PARSED: OnceLock<quick_cache::sync::Cache<String, Option<Arc<PointQuery>>>> = OnceLock::new();
    if !mentions_trace_id(sql) {
        return None;
    }
    if sql.len() > PARSED_MAX_BYTES {
        return PointQuery::parse(sql).map(Arc::new);
    }
    let cache = PARSED.get_or_init(|| quick_cache::sync::Cache::new(PARSED_ENTRIES));
    if let Some(known) = cache.get(sql) {
        return known;
    }
    let query = PointQuery::parse(sql).map(Arc::new);
    cache.insert(sql.to_owned(), query.clone());
    query
}

/// Whether `sql` names `trace_id` at all (every lookup does).
fn mentions_trace_id(sql: &str) -> bool {
    sql.as_bytes().windows(8).any(|w| w.eq_ignore_ascii_case(b"trace_id"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &str = "0123456789abcdef0123456789abcdef";

    fn parse(sql: &str) -> Option<PointQuery> {
        PointQuery::parse(&sql.replace("{T}", T))
    }

    /// The remembered parse is the parse, for lookups, for statements that mention
    /// `trace_id` without being one, and for statements too long to remember, asked twice.
    #[test]
    fn remembered_parses_are_the_parses() {
        let long_in = format!(
            "SELECT * FROM events WHERE trace_id = '{T}' AND agent_id IN ({})",
            (0..400).map(|i| format!("'agent-{i:04}'")).collect::<Vec<_>>().join(", ")
        );
        assert!(long_in.len() > PARSED_MAX_BYTES);
        let statements = [
            format!("SELECT span_id, content FROM events WHERE trace_id = '{T}' ORDER BY timestamp"),
            format!("SELECT * FROM traces WHERE trace_id = '{T}' AND tenant = 'acme' LIMIT 3"),
            "SELECT tenant, count(DISTINCT trace_id) FROM events GROUP BY tenant".to_string(),
            "SELECT kind, count(*) FROM events GROUP BY kind".to_string(),
            format!("SELECT * FROM events WHERE trace_id = '{T}' OR kind = 'error'"),
            long_in,
        ];
        for sql in &statements {
            let want = PointQuery::parse(sql);
            for _ in 0..2 {
                assert_eq!(parsed(sql).as_deref(), want.as_ref(), "{sql}");
            }
        }
        assert!(parsed(&statements[0]).is_some() && parsed(&statements[2]).is_none());
    }

    fn asc() -> SortOptions {
        SortOptions { descending: false, nulls_first: false }
    }

    #[test]
    fn the_trace_lookup_shapes_are_recognized() {
        let q = parse("SELECT span_id, timestamp, kind FROM events WHERE trace_id = '{T}' ORDER BY timestamp")
            .expect("point");
        assert_eq!(q.target, Target::Events);
        assert_eq!(q.outputs, [ColumnId::SpanId, ColumnId::Timestamp, ColumnId::Kind].map(Output::Column).to_vec());
        assert_eq!(q.filters, vec![col("trace_id").eq(lit(T))]);
        assert_eq!(q.order, vec![(ColumnId::Timestamp, asc())]);
        assert_eq!((q.limit, q.offset), (None, 0));

        let q =
            parse("select * from EVENTS where '{T}' = Trace_Id and tenant = 'acme' limit 3 offset 2;").expect("point");
        assert_eq!(q.outputs, ColumnId::ALL.map(Output::Column).to_vec());
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
        // The `traces` view: its own columns, the step struct among them; conditions and sort
        // keys on its plain columns.
        let q = parse("SELECT * FROM traces WHERE trace_id = '{T}' AND agent_id = 'a' ORDER BY timestamp DESC")
            .expect("point");
        assert_eq!(q.target, Target::Traces);
        let mut want: Vec<Output> = TRACES_COLUMNS.map(Output::Column).to_vec();
        want.push(Output::Step);
        assert_eq!(q.outputs, want);
        let q = parse("SELECT Events, timestamp FROM traces WHERE trace_id = '{T}'").expect("point");
        assert_eq!(q.outputs, vec![Output::Step, Output::Column(ColumnId::Timestamp)]);
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
            "SELECT events FROM events WHERE trace_id = '{T}'",
            "SELECT tenant FROM traces WHERE trace_id = '{T}' AND kind = 'output'",
            "SELECT tenant FROM traces WHERE trace_id = '{T}' ORDER BY events",
            "SELECT events.span_id FROM traces WHERE trace_id = '{T}'",
            "SELECT tenant FROM traces WHERE trace_id = '{T}' ORDER BY events.span_id",
            "SELECT events, events FROM traces WHERE trace_id = '{T}'",
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
