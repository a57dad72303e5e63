"""Load adversarial events into DuckDB without our code: timestamps parsed here (offsets,
fraction digits) and defaults (tenant "default", status "ok") applied as the contract says.

Usage: duckload.py EVENTS.jsonl DUCKDB_FILE"""
import json, sys, duckdb, pyarrow as pa
from timestamps import event_ns
rows = {k: [] for k in ["tenant","trace_id","span_id","parent_span_id","agent_id","session_id","ts","kind","name","content","intent","confidence","duration_ms","status","error_message","model","input_tokens","output_tokens","cost_usd","attributes"]}
for line in open(sys.argv[1], encoding="utf-8"):
    e = json.loads(line)
    ns = event_ns(e)
    for k in rows:
        if k == "ts": rows[k].append(ns)
        elif k == "tenant": rows[k].append(e.get("tenant", "default"))
        elif k == "status": rows[k].append(e.get("status", "ok"))
        elif k == "attributes": rows[k].append(list((e.get("attributes") or {}).items()))
        else:
            v = e.get(k)
            if k in ("confidence","duration_ms","cost_usd") and v is not None: v = float(v)
            rows[k].append(v)
t = pa.table({k: (pa.array(v, pa.map_(pa.string(), pa.string())) if k=="attributes" else pa.array(v, pa.int64()) if k in ("ts","input_tokens","output_tokens") else pa.array(v)) for k, v in rows.items()})
con = duckdb.connect(sys.argv[2])
con.execute("DROP TABLE IF EXISTS events")
con.execute("CREATE TABLE events AS SELECT * EXCLUDE (ts), make_timestamp_ns(ts) AS timestamp FROM t")
print(con.execute("select count(*), min(timestamp), max(timestamp), sum(length(content)) from events").fetchall())
