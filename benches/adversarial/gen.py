"""Adversarial events, unlike benches/src/lib.rs's generator: high-cardinality tenants, agents,
names and models; Japanese, emoji, combining marks, control characters and LIKE's own `%` and
`_` in text; texts from empty to 100 KB; timestamps as RFC 3339 with offsets and 0 to 9
fraction digits or as timestamp_ns, from 1992 to 2055; floats at 0, 1, one ULP below 1,
subnormal and near f64's ends; integers at i64's ends; nulls and absent fields everywhere.

Usage: gen.py N [SEED] > events.jsonl"""
import json, random, sys, datetime
r = random.Random(int(sys.argv[2]) if len(sys.argv) > 2 else 7)
n = int(sys.argv[1])
words = ["naïve", "café", "日本語", "テスト", "🚀", "emoji😀ok", "Ünïcödé", "a\u0301b", "tab\there", "quote\"d", "back\\slash",
         "new\nline", "%", "_", "LIKE", "NULL", "null", "", " ", "ORD-12345", "x"*50, "Straße", "İstanbul", "ǅ"]
kinds = ["thought","action","observation","output","llm_call","tool_call","error","Custom Kind","handoff","😀"]
def hexid(k): return "".join(r.choice("0123456789abcdef") for _ in range(k))
traces = [hexid(32) for _ in range(max(1, n//7))]
base = 1_700_000_000_000_000_000
for i in range(n):
    e = {}
    if r.random() < 0.9: e["tenant"] = r.choice(["t1","t2","Tenant Three","ten'ant","日本"]) if r.random()<0.8 else f"tenant-{r.randrange(5000)}"
    e["trace_id"] = r.choice(traces)
    e["span_id"] = hexid(16)
    if r.random() < 0.7: e["parent_span_id"] = hexid(16) if r.random() < 0.9 else None
    e["agent_id"] = f"agent-{r.randrange(20000)}" if r.random() < 0.5 else r.choice(["a","b","c","ǅ","ü"])
    if r.random() < 0.5: e["session_id"] = None if r.random()<0.2 else f"s{r.randrange(100000)}"
    ns = base + r.randrange(-10**18, 10**18) if r.random() < 0.05 else base + r.randrange(0, 30*86400*10**9)
    mode = r.random()
    if mode < 0.4:
        e["timestamp_ns"] = ns
    else:
        secs, frac = divmod(ns, 10**9)
        dt = datetime.datetime.fromtimestamp(secs, datetime.timezone.utc)
        prec = r.choice([0,3,6,9])
        off = r.choice([0,0,330,-480,60]) if r.random() < 0.5 else 0
        local = dt + datetime.timedelta(minutes=off)
        s = local.strftime("%Y-%m-%dT%H:%M:%S")
        if prec: s += "." + f"{frac:09d}"[:prec]
        else: ns = secs * 10**9
        if prec and prec < 9: ns = secs*10**9 + int(f"{frac:09d}"[:prec].ljust(9,"0"))
        s += "Z" if off == 0 else ("+" if off>0 else "-") + f"{abs(off)//60:02d}:{abs(off)%60:02d}"
        e["timestamp"] = s
        if mode > 0.9: e["timestamp_ns"] = ns
    e["kind"] = r.choice(kinds)
    if r.random() < 0.8: e["name"] = None if r.random()<0.1 else (f"tool_{r.randrange(50000)}" if r.random()<0.5 else r.choice(words))
    if r.random() < 0.9:
        L = r.choice([0,1,5,40,300,3000, 20000]) if r.random()<0.99 else 100000
        e["content"] = None if r.random()<0.05 else " ".join(r.choice(words) if r.random()<0.5 else hexid(r.randrange(1,12)) for _ in range(max(0,L//6)))[:L]
    if r.random() < 0.7: e["intent"] = None if r.random()<0.2 else (r.choice(["refund","Refund","refund ","返金",""]) if r.random()<0.7 else f"intent-{r.randrange(3000)}")
    if r.random() < 0.7: e["confidence"] = None if r.random()<0.1 else r.choice([0, 1, 0.0, 1.0, 0.5, r.random(), 1e-300, 0.9999999999999999])
    if r.random() < 0.7: e["duration_ms"] = None if r.random()<0.1 else r.choice([0, -5.5, 1e300, -1e300, r.random()*1000, 123456789012345, 5e-324, 3])
    if r.random() < 0.9: e["status"] = r.choice(["ok","error"])
    if r.random() < 0.3: e["error_message"] = None if r.random()<0.3 else r.choice(words) * r.randrange(1,5)
    if r.random() < 0.5: e["model"] = None if r.random()<0.2 else (r.choice(["gpt-4o","claude-3","日本モデル"]) if r.random()<0.7 else f"m-{r.randrange(10000)}")
    for k in ("input_tokens","output_tokens"):
        if r.random() < 0.5: e[k] = None if r.random()<0.2 else r.choice([0, 1, r.randrange(10**6), 2**53, 2**62, -3, 9223372036854775807, -9223372036854775808])
    if r.random() < 0.5: e["cost_usd"] = None if r.random()<0.2 else r.choice([0, 1e-9, r.random(), 1e15, -0.0])
    if r.random() < 0.6:
        e["attributes"] = {(r.choice(words) if r.random()<0.3 else f"k{r.randrange(300)}"): (r.choice(words) if r.random()<0.5 else hexid(8)) for _ in range(r.randrange(0,12))}
    print(json.dumps(e, ensure_ascii=r.random()<0.5))
