"""Load adversarial events into DuckDB without our code: timestamps parsed here (offsets,
fraction digits) and defaults (tenant "default", status "ok") applied as the contract says.

Usage: duckload.py EVENTS.jsonl DUCKDB_FILE"""
import json, re, sys, duckdb, pyarrow as pa
rows = {k: [] for k in ["tenant","trace_id","span_id","parent_span_id","agent_id","session_id","ts","kind","name","content","intent","confidence","duration_ms","status","error_message","model","input_tokens","output_tokens","cost_usd","attributes"]}
rx = re.compile(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d+))?(Z|([+-])(\d\d):(\d\d))$")
import calendar
def parse(s):
    m = rx.match(s); y,mo,d,h,mi,se = map(int, m.groups()[:6])
    frac = (m.group(7) or "").ljust(9, "0")
    ns = calendar.timegm((y,mo,d,h,mi,se)) * 10**9 + int(frac)
    if m.group(8) != "Z":
        off = (int(m.group(10))*60 + int(m.group(11))) * 60 * 10**9
        ns -= off if m.group(9) == "+" else -off
    return ns
for line in open(sys.argv[1], encoding="utf-8"):
    e = json.loads(line)
    ns = e["timestamp_ns"] if "timestamp_ns" in e else parse(e["timestamp"])
    if "timestamp" in e and "timestamp_ns" in e: assert parse(e["timestamp"]) == e["timestamp_ns"]
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
