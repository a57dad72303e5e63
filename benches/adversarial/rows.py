"""Every field of every event, read back through `activemirror sql --format json`, against
the source lines (floats to the bit, -0.0 included; timestamps to the nanosecond).

Usage: rows.py BIN DATA_DIR|SERVER_URL EVENTS.jsonl. Exits 1 if any row differs."""
import json, subprocess, sys, math
from timestamps import event_ns
from target import where
BIN = sys.argv[1]; DATA = sys.argv[2]; SRC = sys.argv[3]
src = {}
for line in open(SRC, encoding="utf-8"):
    e = json.loads(line)
    src[e["span_id"]] = e
p = subprocess.run([BIN, "sql", "SELECT *, CAST(timestamp AS BIGINT) AS ts_ns FROM events", *where(DATA), "--format", "json"], capture_output=True)
assert p.returncode == 0, p.stderr[-500:]
out = json.loads(p.stdout)
print("rows", len(out), "source", len(src))
bad = 0
for r in out:
    e = src[r["span_id"]]
    want = dict(e)
    want.setdefault("tenant", "default"); want.setdefault("status", "ok")
    ns = event_ns(e)
    for k in ["parent_span_id","session_id","name","content","intent","confidence","duration_ms","error_message","model","input_tokens","output_tokens","cost_usd"]:
        want.setdefault(k, None)
    wattr = e.get("attributes") or {}
    diffs = []
    if r["ts_ns"] != ns: diffs.append(("ts", r["ts_ns"], ns))
    for k in ["tenant","trace_id","agent_id","kind","status","parent_span_id","session_id","name","content","intent","error_message","model","input_tokens","output_tokens"]:
        if r.get(k) != want[k]: diffs.append((k, str(r.get(k))[:60], str(want[k])[:60]))
    for k in ["confidence","duration_ms","cost_usd"]:
        a, b = r.get(k), want[k]
        if a is None or b is None:
            if a is not b: diffs.append((k, a, b))
        elif float(a) != float(b) or math.copysign(1, float(a)) != math.copysign(1, float(b)): diffs.append((k, a, b))
    ra = r.get("attributes") or {}
    if isinstance(ra, list): ra = {x["key"]: x["value"] for x in ra}
    if ra != wattr: diffs.append(("attributes", str(ra)[:80], str(wattr)[:80]))
    if diffs:
        bad += 1
        if bad <= 10: print(r["span_id"], diffs)
print("rows with differences:", bad)
repeated = len(out) - len({r["span_id"] for r in out})
if repeated:
    print("span_ids stored more than once:", repeated)
sys.exit(1 if bad or repeated or len(out) != len(src) else 0)
