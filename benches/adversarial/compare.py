"""71 queries over the adversarial events, ours (`activemirror sql --format json`) against
DuckDB on the same events loaded independently by duckload.py.

Usage: compare.py BIN DATA_DIR|SERVER_URL DUCKDB_FILE. Exits 1 on any mismatch."""
import json, subprocess, sys, duckdb, math, datetime, re
from target import where
BIN, DATA, DUCK = sys.argv[1], sys.argv[2], sys.argv[3]
con = duckdb.connect(DUCK, read_only=True)
Q = [
 ("count(*)", "SELECT count(*) FROM events", None),
 ("per tenant", "SELECT tenant, count(*) FROM events GROUP BY 1", None),
 ("per kind", "SELECT kind, count(*) FROM events GROUP BY 1", None),
 ("per agent top", "SELECT agent_id, count(*) n FROM events GROUP BY 1 ORDER BY n DESC, agent_id LIMIT 30", None),
 ("agents distinct", "SELECT count(DISTINCT agent_id), count(DISTINCT name), count(DISTINCT model), count(DISTINCT intent), count(DISTINCT session_id), count(DISTINCT trace_id), count(DISTINCT tenant) FROM events", None),
 ("intent eq", "SELECT intent, count(*) FROM events WHERE intent IN ('refund','Refund','refund ','返金','') GROUP BY 1", None),
 ("intent null", "SELECT count(*) FROM events WHERE intent IS NULL", None),
 ("empty intent", "SELECT count(*) FROM events WHERE intent = ''", None),
 ("agent eq unicode", "SELECT count(*) FROM events WHERE agent_id = 'ǅ'", None),
 ("tenant quote", "SELECT count(*) FROM events WHERE tenant = 'ten''ant'", None),
 ("tenant 日本", "SELECT count(*), sum(length(content)) FROM events WHERE tenant = '日本'", None),
 ("high-card agent", "SELECT count(*) FROM events WHERE agent_id = 'agent-777'", None),
 ("high-card agent IN", "SELECT agent_id, count(*) FROM events WHERE agent_id IN ('agent-1','agent-19999','agent-5000','nope') GROUP BY 1", None),
 ("name high card", "SELECT count(*) FROM events WHERE name = 'tool_123'", None),
 ("model", "SELECT model, count(*) FROM events WHERE model IS NOT NULL GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 10", None),
 ("confidence", "SELECT count(*) FROM events WHERE confidence < 0.5", None),
 ("confidence eq", "SELECT count(*), sum(CASE WHEN confidence = 1 THEN 1 ELSE 0 END), sum(CASE WHEN confidence = 0 THEN 1 ELSE 0 END) FROM events WHERE confidence IS NOT NULL", None),
 ("conf tiny", "SELECT count(*) FROM events WHERE confidence > 0 AND confidence < 1e-200", None),
 ("duration huge", "SELECT count(*) FROM events WHERE duration_ms > 1e299", None),
 ("duration neg", "SELECT count(*), min(duration_ms), max(duration_ms) FROM events WHERE duration_ms < 0", None),
 ("duration denorm", "SELECT count(*) FROM events WHERE duration_ms > 0 AND duration_ms < 1e-300", None),
 ("tokens max", "SELECT min(input_tokens), max(input_tokens), count(input_tokens), min(output_tokens), max(output_tokens) FROM events", None),
 ("tokens eq", "SELECT count(*) FROM events WHERE input_tokens = 9223372036854775807 OR output_tokens = -9223372036854775808", None),
 ("tokens bounded sum", "SELECT sum(input_tokens) FROM events WHERE input_tokens BETWEEN 0 AND 1000000", None),
 ("cost", "SELECT count(*), min(cost_usd), max(cost_usd) FROM events WHERE cost_usd IS NOT NULL", None),
 ("cost negzero", "SELECT count(*) FROM events WHERE cost_usd = 0", None),
 ("status", "SELECT status, count(*) FROM events GROUP BY 1", None),
 ("err msg", "SELECT count(*), count(error_message), sum(length(error_message)) FROM events WHERE status = 'error'", None),
 ("time min max", "SELECT {E}(min(timestamp)), {E}(max(timestamp)) FROM events", None),
 ("time range", "SELECT count(*) FROM events WHERE timestamp >= '2023-11-20' AND timestamp < '2023-11-25 12:00:00'", None),
 ("time day", "SELECT {E}(date_trunc('day', timestamp)) d, count(*) FROM events WHERE timestamp BETWEEN '2023-11-14' AND '2023-12-20' GROUP BY 1", None),
 ("time hour", "SELECT {E}(date_trunc('hour', timestamp)) d, count(*) FROM events GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 20", None),
 ("time month", "SELECT {E}(date_trunc('month', timestamp)) d, count(*) FROM events GROUP BY 1", None),
 ("time old", "SELECT count(*) FROM events WHERE timestamp < '2000-01-01'", None),
 ("time exact", "SELECT count(*) FROM events WHERE timestamp = (SELECT max(timestamp) FROM events)", None),
 ("like unicode", "SELECT count(*) FROM events WHERE content LIKE '%日本語%'", None),
 ("like emoji", "SELECT count(*) FROM events WHERE content LIKE '%🚀%'", None),
 ("like ord", "SELECT count(*) FROM events WHERE content LIKE '%ORD-12345%'", None),
 ("like hex", "SELECT count(*) FROM events WHERE content LIKE '%abc%'", None),
 ("like esc", "SELECT count(*) FROM events WHERE content LIKE '%\\%%' ESCAPE '\\'", None),
 ("like underscore", "SELECT count(*) FROM events WHERE content LIKE '%caf_ %'", None),
 ("like prefix", "SELECT count(*) FROM events WHERE content LIKE 'naïve%'", None),
 ("like newline", "SELECT count(*) FROM events WHERE content LIKE '%new' || chr(10) || 'line%'", None),
 ("like word boundary", "SELECT count(*) FROM events WHERE content LIKE '%Straße İstanbul%'", None),
 ("like combining", "SELECT count(*) FROM events WHERE content LIKE '%a' || chr(769) || 'b%'", None),
 ("ilike", "SELECT count(*) FROM events WHERE content ILIKE '%STRASSE%' OR content ILIKE '%straße%'", None),
 ("not like", "SELECT count(*) FROM events WHERE content NOT LIKE '%x%'", None),
 ("content null", "SELECT count(*), count(content), sum(CASE WHEN content = '' THEN 1 ELSE 0 END) FROM events", None),
 ("content long", "SELECT count(*), max(length(content)) FROM events WHERE length(content) > 50000", None),
 ("attr key", "SELECT count(*) FROM events WHERE attributes['k5'] IS NOT NULL", "SELECT count(*) FROM events WHERE attributes['k5'] IS NOT NULL"),
 ("attr val", "SELECT attributes['naïve'] v, count(*) FROM events WHERE attributes['naïve'] IS NOT NULL GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 5", None),
 ("attr cardinality", "SELECT sum(cardinality(attributes)) FROM events", None),
 ("trace", "SELECT count(*) FROM events WHERE trace_id = (SELECT min(trace_id) FROM events)", None),
 ("trace rows", "SELECT span_id, {E}(timestamp) AS ts, kind FROM events WHERE trace_id = (SELECT max(trace_id) FROM events) ORDER BY timestamp, span_id", None),
 ("span", "SELECT count(*) FROM events WHERE span_id LIKE 'ab%'", None),
 ("parent null", "SELECT count(*), count(parent_span_id) FROM events", None),
 ("join parent", "SELECT count(*) FROM events c JOIN events p ON c.parent_span_id = p.span_id AND c.trace_id = p.trace_id", None),
 ("join parent content", "SELECT count(*), sum(length(p.content)) FROM events c JOIN events p ON c.parent_span_id = p.span_id AND c.trace_id = p.trace_id WHERE c.status = 'error'", None),
 ("join key list", "SELECT e.span_id, e.name FROM events e JOIN (SELECT trace_id FROM events WHERE status = 'error' ORDER BY timestamp DESC, span_id LIMIT 5) t ON e.trace_id = t.trace_id ORDER BY e.span_id", None),
 ("in subquery", "SELECT count(*), min(span_id) FROM events WHERE trace_id IN (SELECT trace_id FROM events WHERE kind = 'handoff')", None),
 ("name subquery", "SELECT count(*) FROM events WHERE name = (SELECT max(name) FROM events WHERE kind = 'tool_call')", None),
 ("latest", "SELECT span_id, {E}(timestamp) AS ts FROM events ORDER BY timestamp DESC, span_id LIMIT 15", None),
 ("topk duration", "SELECT span_id, duration_ms FROM events ORDER BY duration_ms DESC NULLS LAST, span_id LIMIT 10", None),
 ("session", "SELECT count(*) FROM events WHERE session_id = 's123'", None),
 ("or", "SELECT count(*) FROM events WHERE (kind = 'handoff' OR status = 'error') AND NOT (tenant = 't1')", None),
 ("not in", "SELECT count(*) FROM events WHERE kind NOT IN ('thought','action')", None),
 ("kind emoji", "SELECT count(*) FROM events WHERE kind = '😀' OR kind = 'Custom Kind'", None),
 ("window", "SELECT tenant, n, rank() OVER (ORDER BY n DESC, tenant) FROM (SELECT tenant, count(*) n FROM events GROUP BY 1) ORDER BY 3 LIMIT 10", None),
 # DuckDB's quantile_cont interpolates as lo*(1-d) + hi*d, which rounds a median of two equal
 # subnormals (5e-324) to 0: the exact median is computed from the sorted values instead.
 ("percentile", "SELECT agent_id, {P} FROM events WHERE agent_id IN ('a','b','c') GROUP BY 1",
  "SELECT agent_id, CASE WHEN len(v) % 2 = 1 THEN v[len(v) // 2 + 1] WHEN v[len(v) // 2] = v[len(v) // 2 + 1] "
  "THEN v[len(v) // 2] ELSE v[len(v) // 2] + (v[len(v) // 2 + 1] - v[len(v) // 2]) / 2 END FROM "
  "(SELECT agent_id, list_sort(list(duration_ms)) AS v FROM events WHERE agent_id IN ('a','b','c') "
  "AND duration_ms IS NOT NULL GROUP BY 1)"),
 ("upper", "SELECT count(*) FROM events WHERE upper(tenant) = 'T1'", None),
 ("traces table", "SELECT count(*) FROM traces WHERE agent_id = 'a' AND timestamp > '2023-11-20' AND events.semantics.intent = 'refund' AND events.semantics.confidence < 0.7", "SELECT count(*) FROM events WHERE agent_id = 'a' AND timestamp > '2023-11-20' AND intent = 'refund' AND confidence < 0.7"),
]
def ours(sql):
    p = subprocess.run([BIN, "sql", sql, *where(DATA), "--format", "json"], capture_output=True, text=True)
    if p.returncode: return "ERROR " + p.stderr.strip()[-300:]
    return [list(r.values()) for r in json.loads(p.stdout)]
def norm(v):
    if isinstance(v, bool): return int(v)
    if isinstance(v, float):
        if v == 0: return 0.0
        if math.isinf(v) or math.isnan(v): return v
        return float(f"{v:.12g}")
    if isinstance(v, (datetime.datetime,)): return v.isoformat()
    if hasattr(v, "as_integer_ratio") and not isinstance(v, int): return norm(float(v))
    return v
def rows(rs, ordered):
    out = [tuple(norm(x) for x in r) for r in rs]
    return out if ordered else sorted(out, key=repr)
bad = 0
for name, q, dq in Q:
    oq = q.replace("{E}", "CAST").replace("{P}", "percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_ms)")
    # Epoch nanoseconds: ours with CAST(x AS BIGINT), DuckDB with epoch_ns(x).
    oq = re.sub(r"CAST\(([^()]*(?:\([^()]*\))?[^()]*)\)", r"CAST(\1 AS BIGINT)", oq)
    dd = (dq or q).replace("{E}", "epoch_ns").replace("{P}", "quantile_cont(duration_ms, 0.5)")
    try:
        d = con.execute(dd).fetchall()
    except Exception as ex:
        d = "ERROR " + str(ex)[:200]
    o = ours(oq)
    ordered = "ORDER BY" in q and "LIMIT" in q or "ORDER BY timestamp" in q
    ok = (isinstance(o, list) and not isinstance(d, str) and rows(o, ordered) == rows(d, ordered))
    if not ok:
        bad += 1
        print("MISMATCH", name, "\n  ours:", str(o)[:400], "\n  duck:", str(d)[:400])
    else:
        print("ok", name, str(o)[:80])
print("mismatches", bad, "of", len(Q))
sys.exit(1 if bad else 0)
