#!/usr/bin/env python3
"""ActiveMirrorOS side-by-side benchmark: ours vs DuckDB vs chDB (ClickHouse) on the same data,
in the same run. Run through `benches/run`, which builds the binaries and the Python venv.

Measures offline import, size at rest (plus Parquet-zstd), eleven queries (warm-up, then
interleaved repetitions; median, p99 and spread; answers cross-checked between engines), peak
RSS, and our server's gRPC ingest. Writes a Markdown report with PNG charts.
"""
import argparse
import datetime as dt
import decimal
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
import http.client

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DAY_NS = 86_400 * 10**9

# ---------------------------------------------------------------- peers: load and query workers

DUCK_COLUMNS = (
    "{tenant:'VARCHAR',trace_id:'VARCHAR',span_id:'VARCHAR',parent_span_id:'VARCHAR',agent_id:'VARCHAR',"
    "session_id:'VARCHAR',timestamp_ns:'BIGINT',kind:'VARCHAR',name:'VARCHAR',content:'VARCHAR',intent:'VARCHAR',"
    "confidence:'DOUBLE',duration_ms:'DOUBLE',status:'VARCHAR',error_message:'VARCHAR',model:'VARCHAR',"
    "input_tokens:'BIGINT',output_tokens:'BIGINT',cost_usd:'DOUBLE',attributes:'MAP(VARCHAR,VARCHAR)'}"
)

CH_FILE_SCHEMA = (
    "tenant String, trace_id String, span_id String, parent_span_id Nullable(String), agent_id String, "
    "session_id Nullable(String), timestamp_ns Int64, kind String, name Nullable(String), content Nullable(String), "
    "intent Nullable(String), confidence Nullable(Float64), duration_ms Nullable(Float64), status String, "
    "error_message Nullable(String), model Nullable(String), input_tokens Nullable(Int64), "
    "output_tokens Nullable(Int64), cost_usd Nullable(Float64), attributes Map(String,String)"
)

CH_TABLE = """CREATE TABLE bench.events (
  tenant LowCardinality(String), trace_id String, span_id String, parent_span_id Nullable(String),
  agent_id LowCardinality(String), session_id Nullable(String), timestamp DateTime64(9, 'UTC'),
  kind LowCardinality(String), name Nullable(String), content Nullable(String),
  intent LowCardinality(Nullable(String)), confidence Nullable(Float64), duration_ms Nullable(Float64),
  status LowCardinality(String), error_message Nullable(String), model LowCardinality(Nullable(String)),
  input_tokens Nullable(Int64), output_tokens Nullable(Int64), cost_usd Nullable(Float64),
  attributes Map(String, String)
) ENGINE = MergeTree ORDER BY (tenant, agent_id, timestamp)"""


def own_peak_rss():
    """This process's high-water RSS in bytes (VmHWM: unlike ru_maxrss it does not carry the
    parent's figure across fork and exec)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def export_parquet(db, out):
    import duckdb

    con = duckdb.connect(db, read_only=True)
    con.execute(f"COPY events TO '{out}' (FORMAT parquet, COMPRESSION zstd)")
    con.close()


def load_duckdb(jsonl, db):
    import duckdb

    con = duckdb.connect(db)
    con.execute(
        f"CREATE TABLE events AS SELECT * EXCLUDE (timestamp_ns), make_timestamp_ns(timestamp_ns) AS timestamp "
        f"FROM read_json('{jsonl}', format='newline_delimited', columns={DUCK_COLUMNS})"
    )
    con.execute("CHECKPOINT")
    con.close()
    print(json.dumps({"peak_rss": own_peak_rss()}))


def load_chdb(jsonl, path):
    from chdb import session

    s = session.Session(path)
    s.query("CREATE DATABASE IF NOT EXISTS bench")
    s.query(CH_TABLE)
    s.query(
        "INSERT INTO bench.events SELECT tenant, trace_id, span_id, parent_span_id, agent_id, session_id, "
        "fromUnixTimestamp64Nano(timestamp_ns, 'UTC'), kind, name, content, intent, confidence, duration_ms, status, "
        "error_message, model, input_tokens, output_tokens, cost_usd, attributes "
        f"FROM file('{jsonl}', 'JSONEachRow', '{CH_FILE_SCHEMA}')"
    )
    s.query("OPTIMIZE TABLE bench.events FINAL")
    s.close()
    print(json.dumps({"peak_rss": own_peak_rss()}))


def worker(engine, path):
    """Query loop for one peer in its own process: one JSON command per stdin line."""
    if engine == "duckdb":
        import duckdb

        con = duckdb.connect(path, read_only=True)

        def run(sql):
            cur = con.execute(sql)
            return [list(r) for r in cur.fetchall()]

    else:
        from chdb import session

        s = session.Session(path)

        def run(sql):
            r = s.query(sql, "JSONCompact")
            return json.loads(r.bytes() or b'{"data": []}')["data"]

    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd.get("exit"):
            break
        try:
            t = time.perf_counter()
            rows = run(cmd["sql"])
            ms = (time.perf_counter() - t) * 1e3
            out = {"ms": ms, "rows": rows if cmd.get("rows") else None}
        except Exception as e:  # reported, never fatal to the run
            out = {"error": str(e)}
        out["peak_rss"] = own_peak_rss()
        print(json.dumps(out, default=str), flush=True)


# ---------------------------------------------------------------- ours: import and server


def run_measured(cmd, **kw):
    """Runs a command; returns (seconds, peak RSS bytes of the child). A child that prints
    `{"peak_rss": N}` (our Python loaders) reports its own VmHWM; otherwise ru_maxrss is used
    (the driver stays small, so what it passes on through fork is negligible)."""
    t = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=kw.pop("stdout", subprocess.PIPE), **kw)
    out = p.stdout.read() if p.stdout else b""
    _, status, ru = os.wait4(p.pid, 0)
    secs = time.perf_counter() - t
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"command failed ({status}): {' '.join(cmd)}")
    for line in (out or b"").decode(errors="replace").splitlines():
        if line.startswith('{"peak_rss"'):
            return secs, json.loads(line)["peak_rss"]
    return secs, ru.ru_maxrss * 1024


def du(path):
    if os.path.isfile(path):
        return os.path.getsize(path)
    total = 0
    for d, _, files in os.walk(path):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(d, f))
            except OSError:
                pass
    return total


class OurServer:
    def __init__(self, binary, data_dir):
        self.p = subprocess.Popen(
            [binary, "start", "--data-dir", data_dir, "--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "RUST_LOG": "info"},
        )
        self.http = self.grpc = None
        self.conn = None
        self.server_ms = float("nan")
        for line in self.p.stderr:
            m = re.search(r"addr=(\S+)", line)
            if m and "HTTP listening" in line:
                self.http = m.group(1)
            elif m and "gRPC listening" in line:
                self.grpc = m.group(1)
            if self.http and self.grpc:
                break
        if not (self.http and self.grpc):
            raise SystemExit("server did not start")
        import threading

        threading.Thread(target=lambda: [None for _ in self.p.stderr], daemon=True).start()

    def sql(self, sql):
        # One persistent connection, as a client library or dashboard keeps: the timings are
        # the query, not a TCP handshake per request.
        if self.conn is None:
            host, port = self.http.rsplit(":", 1)
            self.conn = http.client.HTTPConnection(host, int(port), timeout=600)
        body = json.dumps({"sql": sql}).encode()
        try:
            self.conn.request("POST", "/v1/sql", body=body, headers={"content-type": "application/json"})
            r = self.conn.getresponse()
            data = r.read()
        except (http.client.HTTPException, OSError):
            self.conn.close()
            self.conn = None
            raise
        if r.status != 200:
            raise RuntimeError(f"/v1/sql answered {r.status}: {data[:500]!r}")
        # Server-Timing: "query;dur=<ms>, encode;dur=<ms>" (planning and running, then JSON).
        self.server_ms = sum(float(m) for m in re.findall(r";dur=([0-9.]+)", r.getheader("server-timing") or ""))
        return json.loads(data)

    def status_bytes(self, key):
        """A memory figure of the server's /proc status (`VmHWM`, `VmRSS`), in bytes."""
        with open(f"/proc/{self.p.pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
        return 0

    def peak_rss(self):
        return self.status_bytes("VmHWM")

    def cpu_seconds(self):
        """User plus system CPU time the server has used so far (`/proc/PID/stat`)."""
        with open(f"/proc/{self.p.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        # After the command name: state is field 3, utime and stime are fields 14 and 15.
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss(self):
        return self.status_bytes("VmRSS")

    def stop(self):
        self.p.terminate()
        self.p.wait(timeout=60)


class Peer:
    def __init__(self, engine, path):
        self.engine = engine
        self.p = subprocess.Popen(
            [sys.executable, __file__, "worker", engine, path],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.maxrss = 0

    def run(self, sql, rows=False):
        self.p.stdin.write(json.dumps({"sql": sql, "rows": rows}) + "\n")
        self.p.stdin.flush()
        out = json.loads(self.p.stdout.readline())
        self.maxrss = max(self.maxrss, out.get("peak_rss", 0))
        if "error" in out:
            raise RuntimeError(out["error"])
        return out

    def stop(self):
        self.p.stdin.write(json.dumps({"exit": True}) + "\n")
        self.p.stdin.flush()
        self.p.wait(timeout=60)


# ---------------------------------------------------------------- queries


# The columns of our `traces` view, flattened in its order, so the peers answer the contract
# query (`SELECT * FROM traces ...`) with the same values.
TRACES_COLUMNS = ("tenant, trace_id, agent_id, session_id, timestamp, span_id, parent_span_id, kind, name, content, "
                  "duration_ms, status, intent, confidence")


def fmt_ts(ns):
    return dt.datetime.fromtimestamp(ns / 1e9, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def queries(p):
    """The eleven queries, one SQL text per engine, over parameters drawn from the data."""
    agent, tenant, trace, word, since, last_day = (
        p["agent"], p["tenant"], p["trace"], p["word"], p["since"], p["last_day"],
    )
    q = []

    def add(name, ours, duck, ch=None, ordered=False):
        q.append({"name": name, "ours": ours, "duckdb": duck, "chdb": ch or duck, "ordered": ordered})

    add(
        "contract example (agent+time+intent+confidence)",
        f"SELECT * FROM traces WHERE agent_id = '{agent}' AND timestamp > '{since}' "
        "AND events.semantics.intent = 'refund' AND events.semantics.confidence < 0.7",
        f"SELECT {TRACES_COLUMNS} FROM events WHERE agent_id = '{agent}' AND timestamp > '{since}' "
        "AND intent = 'refund' AND confidence < 0.7",
        f"SELECT {TRACES_COLUMNS} FROM bench.events WHERE agent_id = '{agent}' AND timestamp > '{since}' "
        "AND intent = 'refund' AND confidence < 0.7",
    )
    add(
        "count per kind",
        "SELECT kind, count(*) AS n FROM events GROUP BY kind",
        "SELECT kind, count(*) AS n FROM events GROUP BY kind",
        "SELECT kind, count() AS n FROM bench.events GROUP BY kind",
    )
    add(
        "error rate per agent per hour (one tenant)",
        "SELECT agent_id, date_trunc('hour', timestamp) AS hour, "
        "avg(CASE WHEN status = 'error' THEN 1.0 ELSE 0.0 END) AS error_rate, count(*) AS n "
        f"FROM events WHERE tenant = '{tenant}' GROUP BY 1, 2",
        "SELECT agent_id, date_trunc('hour', timestamp) AS hour, "
        "avg(CASE WHEN status = 'error' THEN 1.0 ELSE 0.0 END) AS error_rate, count(*) AS n "
        f"FROM events WHERE tenant = '{tenant}' GROUP BY 1, 2",
        "SELECT agent_id, toStartOfHour(timestamp) AS hour, avg(if(status = 'error', 1.0, 0.0)) AS error_rate, "
        f"count() AS n FROM bench.events WHERE tenant = '{tenant}' GROUP BY 1, 2",
    )
    add(
        "p99 duration per agent",
        "SELECT agent_id, percentile_cont(0.99) WITHIN GROUP (ORDER BY duration_ms) AS p99 FROM events GROUP BY 1",
        "SELECT agent_id, quantile_cont(duration_ms, 0.99) AS p99 FROM events GROUP BY 1",
        "SELECT agent_id, quantileExactInclusive(0.99)(duration_ms) AS p99 FROM bench.events GROUP BY 1",
    )
    add(
        "one trace by trace_id, ordered by time",
        f"SELECT span_id, timestamp, kind, name, content FROM events WHERE trace_id = '{trace}' "
        "ORDER BY timestamp, span_id",
        f"SELECT span_id, timestamp, kind, name, content FROM events WHERE trace_id = '{trace}' "
        "ORDER BY timestamp, span_id",
        f"SELECT span_id, timestamp, kind, name, content FROM bench.events WHERE trace_id = '{trace}' "
        "ORDER BY timestamp, span_id",
        ordered=True,
    )
    add(
        "top intents with confidence < 0.5 in the last day",
        f"SELECT intent, count(*) AS n FROM events WHERE timestamp >= '{last_day}' AND confidence < 0.5 "
        "AND intent IS NOT NULL GROUP BY intent ORDER BY n DESC, intent LIMIT 10",
        f"SELECT intent, count(*) AS n FROM events WHERE timestamp >= '{last_day}' AND confidence < 0.5 "
        "AND intent IS NOT NULL GROUP BY intent ORDER BY n DESC, intent LIMIT 10",
        f"SELECT intent, count() AS n FROM bench.events WHERE timestamp >= '{last_day}' AND confidence < 0.5 "
        "AND intent IS NOT NULL GROUP BY intent ORDER BY n DESC, intent LIMIT 10",
        ordered=True,
    )
    add(
        "tokens and cost per model per day",
        "SELECT model, date_trunc('day', timestamp) AS day, sum(input_tokens) AS input_tokens, "
        "sum(output_tokens) AS output_tokens, sum(cost_usd) AS cost FROM events WHERE model IS NOT NULL GROUP BY 1, 2",
        "SELECT model, date_trunc('day', timestamp) AS day, sum(input_tokens) AS input_tokens, "
        "sum(output_tokens) AS output_tokens, sum(cost_usd) AS cost FROM events WHERE model IS NOT NULL GROUP BY 1, 2",
        "SELECT model, toStartOfDay(timestamp) AS day, sum(input_tokens) AS input_tokens, "
        "sum(output_tokens) AS output_tokens, sum(cost_usd) AS cost FROM bench.events WHERE model IS NOT NULL "
        "GROUP BY 1, 2",
    )
    add(
        f"rare word in content (LIKE '%{word}%')",
        f"SELECT count(*) AS n FROM events WHERE content LIKE '%{word}%'",
        f"SELECT count(*) AS n FROM events WHERE content LIKE '%{word}%'",
        f"SELECT count() AS n FROM bench.events WHERE content LIKE '%{word}%'",
    )
    add(
        "latest 20 events",
        "SELECT span_id, timestamp, agent_id, kind, name, content FROM events ORDER BY timestamp DESC, span_id LIMIT 20",
        "SELECT span_id, timestamp, agent_id, kind, name, content FROM events ORDER BY timestamp DESC, span_id LIMIT 20",
        "SELECT span_id, timestamp, agent_id, kind, name, content FROM bench.events "
        "ORDER BY timestamp DESC, span_id LIMIT 20",
        ordered=True,
    )
    add(
        "trace of an agent's latest error (subquery)",
        "SELECT span_id, timestamp, kind, name FROM events WHERE trace_id = (SELECT trace_id FROM events "
        f"WHERE agent_id = '{agent}' AND status = 'error' ORDER BY timestamp DESC, span_id LIMIT 1) "
        "ORDER BY timestamp, span_id",
        "SELECT span_id, timestamp, kind, name FROM events WHERE trace_id = (SELECT trace_id FROM events "
        f"WHERE agent_id = '{agent}' AND status = 'error' ORDER BY timestamp DESC, span_id LIMIT 1) "
        "ORDER BY timestamp, span_id",
        "SELECT span_id, timestamp, kind, name FROM bench.events WHERE trace_id = (SELECT trace_id FROM bench.events "
        f"WHERE agent_id = '{agent}' AND status = 'error' ORDER BY timestamp DESC, span_id LIMIT 1) "
        "ORDER BY timestamp, span_id",
        ordered=True,
    )
    add(
        "distinct traces per tenant",
        "SELECT tenant, count(DISTINCT trace_id) AS traces FROM events GROUP BY tenant",
        "SELECT tenant, count(DISTINCT trace_id) AS traces FROM events GROUP BY tenant",
        "SELECT tenant, count(DISTINCT trace_id) AS traces FROM bench.events GROUP BY tenant",
    )
    return q


# ---------------------------------------------------------------- answers: normalise and compare

TS_RE = re.compile(r"^(\d{4})-(\d\d)-(\d\d)[ T](\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?(Z|[+-]00:?00)?$")


def norm_value(v):
    if isinstance(v, dt.datetime):
        if v.tzinfo is None:
            v = v.replace(tzinfo=dt.timezone.utc)
        return ("ts", int(v.timestamp()) * 10**6 + v.microsecond)
    if isinstance(v, str):
        m = TS_RE.match(v)
        if m:
            y, mo, d, h, mi, s, frac, _ = m.groups()
            secs = int(dt.datetime(int(y), int(mo), int(d), int(h), int(mi), int(s), tzinfo=dt.timezone.utc).timestamp())
            # Microseconds: DuckDB hands nanosecond timestamps to Python as datetime (micros).
            return ("ts", secs * 10**6 + int((frac or "0").ljust(9, "0")) // 1000)
        return v
    if isinstance(v, bool):
        return v
    if isinstance(v, (int, float, decimal.Decimal)):
        return float(v)
    if v is None:
        return None
    return str(v)


def flatten(row):
    """Values of one result row, with nested structs (our `traces` view) flattened in order."""
    out = []

    def walk(x):
        if isinstance(x, dict):
            for v in x.values():
                walk(v)
        else:
            out.append(x)

    if isinstance(row, dict):
        walk(row)
    else:
        for x in row:
            walk(x)
    return out


def normalise(rows, ordered):
    norm = [tuple(norm_value(v) for v in flatten(r)) for r in rows]
    return norm if ordered else sorted(norm, key=lambda t: repr(t))


def same(a, b):
    if len(a) != len(b):
        return f"{len(a)} rows vs {len(b)}"
    for i, (ra, rb) in enumerate(zip(a, b)):
        if len(ra) != len(rb):
            return f"row {i}: {len(ra)} columns vs {len(rb)}"
        for x, y in zip(ra, rb):
            if isinstance(x, float) and isinstance(y, float):
                if abs(x - y) > 1e-6 * max(1.0, abs(x), abs(y)):
                    return f"row {i}: {x} vs {y}"
            elif x != y:
                return f"row {i}: {x!r} vs {y!r}"
    return None


# ---------------------------------------------------------------- the run


def percentile(xs, p):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = max(0, min(len(xs) - 1, int(round(p * (len(xs) - 1)))))
    return xs[k]


def data_params(jsonl, duck_db):
    import duckdb

    con = duckdb.connect(duck_db, read_only=True)
    agent = con.execute("SELECT agent_id FROM events GROUP BY 1 ORDER BY count(*) DESC, agent_id LIMIT 1").fetchone()[0]
    tenant = con.execute("SELECT tenant FROM events GROUP BY 1 ORDER BY count(*) DESC, tenant LIMIT 1").fetchone()[0]
    lo, hi = con.execute("SELECT epoch_ns(min(timestamp)), epoch_ns(max(timestamp)) FROM events").fetchone()
    con.close()
    trace, word = None, "inconvenience"
    with open(jsonl) as f:
        lines = sum(1 for _ in f)
    with open(jsonl) as f:
        for i, line in enumerate(f):
            if i >= lines // 2:
                e = json.loads(line)
                trace = trace or e["trace_id"]
                m = re.search(r"ORD-\d+", e.get("content") or "")
                if m:
                    word = m.group(0)
                    break
    return {
        "agent": agent,
        "tenant": tenant,
        "trace": trace,
        "word": word,
        "since": fmt_ts(lo + (hi - lo) // 2),
        "last_day": fmt_ts(hi - DAY_NS),
    }


def ensure_data(bin_dir, n, data_root):
    path = os.path.join(data_root, f"events-{n}.jsonl")
    if not os.path.exists(path):
        tmp = path + ".tmp"
        subprocess.run([os.path.join(bin_dir, "storage-bench"), "--events", str(n), "--write-jsonl", tmp], check=True)
        os.rename(tmp, path)
    return path


def bench_size(args, n, work):
    print(f"\n=== {n} events ===", flush=True)
    jsonl = ensure_data(args.bin_dir, n, args.data)
    ours_bin = os.path.join(args.bin_dir, "activemirror")
    res = {"events": n, "jsonl_bytes": os.path.getsize(jsonl), "ingest": {}, "size": {}, "queries": [], "rss": {}}
    paths = {"ours": os.path.join(work, "ours"), "duckdb": os.path.join(work, "events.duckdb"),
             "chdb": os.path.join(work, "chdb")}

    def fresh(p):
        if os.path.isdir(p):
            shutil.rmtree(p)
        elif os.path.exists(p):
            os.remove(p)
        # Write back what earlier steps left dirty, so that no run pays for another's
        # writeback (the fsync-bound gRPC ingest moved 2x with it).
        os.sync()

    loaders = {
        "ours": lambda: run_measured([ours_bin, "import", jsonl, "--data-dir", paths["ours"]],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
        "duckdb": lambda: run_measured([sys.executable, __file__, "load-duckdb", jsonl, paths["duckdb"]]),
        "chdb": lambda: run_measured([sys.executable, __file__, "load-chdb", jsonl, paths["chdb"]]),
    }
    times = {k: [] for k in loaders}
    rss = {k: 0 for k in loaders}
    # Read the file once so that every engine's first run finds it in the page cache: the
    # engine that went first used to pay for reading it from disk (ours, 9-10.5 s against
    # 6.5-6.9 s for its later runs).
    with open(jsonl, "rb") as f:
        while f.read(16 << 20):
            pass
    for r in range(args.ingest_reps):
        order = list(loaders)[r % 3:] + list(loaders)[:r % 3]  # interleave, rotate who goes first
        for eng in order:
            fresh(paths[eng])
            secs, peak = loaders[eng]()
            times[eng].append(secs)
            rss[eng] = max(rss[eng], peak)
            print(f"  import {eng:7s} {secs:7.2f} s  peak RSS {peak / 2**20:7.1f} MB", flush=True)
    for eng in loaders:
        med = statistics.median(times[eng])
        res["ingest"][eng] = {"seconds": times[eng], "median_s": med, "events_per_s": n / med}
        res["rss"][f"{eng} load"] = rss[eng]

    # Size at rest, plus Parquet zstd of the same rows.
    parquet = os.path.join(work, "events.parquet")
    # In a child process, so the driver stays small (its RSS would pass to later children).
    subprocess.run([sys.executable, __file__, "export-parquet", paths["duckdb"], parquet], check=True)
    for eng, p in [*paths.items(), ("parquet-zstd", parquet)]:
        res["size"][eng] = du(p)
    print("  size  " + "  ".join(f"{k} {v / n:.1f} B/ev" for k, v in res["size"].items()), flush=True)

    # Queries: warm-up (answers compared), then interleaved timed repetitions.
    params = data_params(jsonl, paths["duckdb"])
    res["params"] = params
    server = OurServer(ours_bin, paths["ours"])
    peers = {"duckdb": Peer("duckdb", paths["duckdb"]), "chdb": Peer("chdb", paths["chdb"])}
    try:
        qs = queries(params)

        def run(eng, q, rows=False):
            if eng == "ours":
                t = time.perf_counter()
                out = server.sql(q["ours"])
                return (time.perf_counter() - t) * 1e3, out
            out = peers[eng].run(q[eng], rows)
            return out["ms"], out["rows"]

        engines = ["ours", "duckdb", "chdb"]
        for q in qs:
            answers = {}
            for eng in engines:
                for _ in range(args.warmup):
                    _, rows = run(eng, q, rows=True)
                answers[eng] = normalise(rows, q["ordered"])
            q["rows"] = len(answers["ours"])
            q["mismatch"] = {}
            for eng in ["duckdb", "chdb"]:
                why = same(answers["ours"], answers[eng])
                if why:
                    q["mismatch"][eng] = why
                    print(f"  !!! MISMATCH {q['name']}: ours vs {eng}: {why}", flush=True)
            q["ms"] = {e: [] for e in engines}
            q["server_ms"] = []
        for r in range(args.reps):
            for q in qs:
                order = engines[r % 3:] + engines[:r % 3]
                for eng in order:
                    ms, _ = run(eng, q)
                    q["ms"][eng].append(ms)
                    if eng == "ours":
                        q["server_ms"].append(server.server_ms)
        for q in qs:
            stats = {e: {"median": statistics.median(v), "p99": percentile(v, 0.99), "min": min(v), "max": max(v)}
                     for e, v in q["ms"].items()}
            stats["ours server"] = {"median": statistics.median(q["server_ms"]), "p99": percentile(q["server_ms"], 0.99)}
            res["queries"].append({"name": q["name"], "rows": q["rows"], "stats": stats, "mismatch": q["mismatch"],
                                   "sql": {e: q[e] for e in engines}})
            print(f"  {q['name'][:52]:52s} " + "  ".join(f"{e} {s['median']:8.2f}" for e, s in stats.items()
                                                          if e in engines)
                  + ("  MISMATCH" if q["mismatch"] else ""), flush=True)
        res["rss"]["ours query"] = server.peak_rss()
        for e, p in peers.items():
            res["rss"][f"{e} query"] = p.maxrss
    finally:
        server.stop()
        for p in peers.values():
            p.stop()

    # Our server's gRPC ingest with the load generator (durable acks), a fresh server and data
    # directory each run; the report keeps the median run by events/s and the spread.
    runs = []
    for _ in range(max(3, args.ingest_reps) if args.ingest_reps > 1 else 1):
        fresh(os.path.join(work, "grpc"))
        server = OurServer(ours_bin, os.path.join(work, "grpc"))
        try:
            out = subprocess.run(
                [ours_bin, "bench", "ingest", "--grpc", server.grpc, "--clients", str(args.clients), "--batch",
                 "1000", "--events", str(n), "--json"],
                check=True, capture_output=True, text=True,
            ).stdout
            g = json.loads(out.strip().splitlines()[-1])
            g["peak_rss"] = server.peak_rss()
            # Resident memory once the server is idle: compaction runs on after the last ack
            # (the last hot segments 5 s after it), and the server returns freed memory 5 s
            # after its last write, flush or compaction. Sampled each second for 45 s; the
            # report keeps the last sample and when memory settled within 5% of it. (Not in
            # the smoke run, to keep CI short.)
            if not ARGS.smoke:
                samples = []
                for _ in range(45):
                    time.sleep(1)
                    samples.append(server.rss())
                g["idle_rss"] = samples[-1]
                g["idle_settled_s"] = next(i + 1 for i in range(len(samples))
                                           if all(abs(x - samples[-1]) <= 0.05 * samples[-1] for x in samples[i:]))
            # The server's CPU for the whole run, the compaction after the last ack included
            # (45 s later, outside the smoke run): the cost per event, which the rate does not
            # show when compaction is left for after the burst.
            g["server_cpu_s"] = server.cpu_seconds()
            runs.append(g)
            print(f"  gRPC ingest {g['events_per_sec']:.0f} ev/s, ack p50 {g['ack_p50_ms']:.1f} ms "
                  f"p99 {g['ack_p99_ms']:.1f} ms", flush=True)
        finally:
            server.stop()
    runs.sort(key=lambda g: g["events_per_sec"])
    res["grpc_ingest"] = dict(runs[len(runs) // 2], all_events_per_sec=[g["events_per_sec"] for g in runs],
                              runs=runs)
    res["rss"]["ours gRPC ingest"] = max(g["peak_rss"] for g in runs)
    return res


def versions():
    import chdb
    import duckdb

    ours = subprocess.run([os.path.join(ARGS.bin_dir, "activemirror"), "--version"], capture_output=True,
                          text=True).stdout.strip()
    return {"activemirror": ours, "duckdb": duckdb.__version__, "chdb": chdb.__version__,
            "python": platform.python_version()}


def machine():
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB RAM, {platform.system()} {platform.release()}"


def charts(results, out_dir):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    engines = ["ours", "duckdb", "chdb"]
    colors = {"ours": "#2b7bba", "duckdb": "#f0a30a", "chdb": "#d9534f", "parquet-zstd": "#888888"}
    files = []
    for res in results:
        n = res["events"]
        def bar(name, labels, values, ylabel, title):
            fig, ax = plt.subplots(figsize=(6, 3.2))
            ax.bar(labels, values, color=[colors[k] for k in labels])
            ax.set_ylabel(ylabel)
            ax.set_title(title)
            fig.tight_layout()
            fig.savefig(os.path.join(out_dir, name), dpi=110)
            plt.close(fig)
            files.append(name)

        bar(f"ingest-{n}.png", engines, [res["ingest"][e]["events_per_s"] / 1e3 for e in engines],
            "thousand events / s", f"Offline import of {n:,} events (higher is better)")
        keys = engines + ["parquet-zstd"]
        bar(f"size-{n}.png", keys, [res["size"][k] / n for k in keys], "bytes / event",
            f"Size at rest, {n:,} events (lower is better)")

        fig, ax = plt.subplots(figsize=(9, 4.5))
        names = [q["name"].split(" (")[0][:28] for q in res["queries"]]
        width = 0.27
        for i, e in enumerate(engines):
            xs = [j + (i - 1) * width for j in range(len(names))]
            ax.bar(xs, [q["stats"][e]["median"] for q in res["queries"]], width, label=e, color=colors[e])
        ax.set_yscale("log")
        ax.set_ylabel("median latency, ms (log)")
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
        ax.legend()
        ax.set_title(f"Query latency, {n:,} events (lower is better)")
        fig.tight_layout()
        f = f"queries-{n}.png"
        fig.savefig(os.path.join(out_dir, f), dpi=110)
        plt.close(fig)
        files.append(f)
    return files


def report(results, out_dir, started):
    os.makedirs(out_dir, exist_ok=True)
    imgs = charts(results, out_dir)
    v = versions()
    L = []
    L.append("# ActiveMirrorOS vs DuckDB vs chDB: benchmark report\n")
    L.append(f"Generated by `benches/run` on {started:%Y-%m-%d %H:%M} UTC. Machine: {machine()}.")
    L.append(f"Versions: {v['activemirror']}, DuckDB {v['duckdb']}, chDB {v['chdb']} (Python {v['python']}).\n")
    L.append("All engines ran in this one run on the same JSON Lines file from the seeded generator "
             "(`benches/src/lib.rs`). Imports and query repetitions are interleaved (the first engine rotates) "
             "on a shared, noisy 2-core machine; figures are medians, with min..max spread. Ratios are "
             "ours / best peer: below 1 is better for times and sizes, above 1 is better for rates.\n")
    L.append("How each engine is measured: ours through the `activemirror` binary (`import` offline; queries "
             "over HTTP `/v1/sql` to a running server on one kept-alive connection, so our times include HTTP, "
             "JSON encoding of the result and its parsing in Python; the server keeps decoded column blocks and "
             "decompressed text pages between queries, within `query.cache_mb` and `query.text_cache_mb`, so the "
             "warm-up runs fill those caches as they fill the peers' buffer pools). The column 'ours in the "
             "server' is the time the server reports for the same requests (`Server-Timing`: planning, running "
             "and JSON encoding), without the transport and Python's JSON parsing; the ratio uses the time at the "
             "client. DuckDB and chDB in-process in a Python worker (their times include no transport). "
             "DuckDB loads with `read_json` into a table; chDB loads with `file(..., JSONEachRow)` into a "
             "MergeTree table ordered by (tenant, agent_id, timestamp). Peak RSS is each process's high-water "
             "mark (`ru_maxrss` / `VmHWM`).\n")
    for res in results:
        n = res["events"]
        L.append(f"## {n:,} events ({res['jsonl_bytes'] / 1e6:.0f} MB of JSON Lines)\n")
        L.append("### Ingest (offline import of the JSON Lines file)\n")
        L.append("| engine | median s | events/s | spread s | peak RSS MB |")
        L.append("|---|---|---|---|---|")
        for e in ["ours", "duckdb", "chdb"]:
            i = res["ingest"][e]
            L.append(f"| {e} | {i['median_s']:.2f} | {i['events_per_s']:,.0f} | "
                     f"{min(i['seconds']):.2f}..{max(i['seconds']):.2f} | {res['rss'][e + ' load'] / 2**20:.0f} |")
        best = max(res["ingest"][e]["events_per_s"] for e in ["duckdb", "chdb"])
        L.append(f"\nIngest rate ours / best peer: **{res['ingest']['ours']['events_per_s'] / best:.2f}x**.\n")
        if "grpc_ingest" in res:
            g = res["grpc_ingest"]
            L.append(f"Server ingest over gRPC (`activemirror bench ingest`, {ARGS.clients} clients, 1000-event "
                     f"batches, acks after fsync, client and server on this machine, median of "
                     f"{len(g['all_events_per_sec'])} runs): "
                     f"**{g['events_per_sec']:,.0f} events/s** (runs: "
                     f"{', '.join(f'{v:,.0f}' for v in g['all_events_per_sec'])}), {g['mb_per_sec']:.1f} MB/s, ack p50 "
                     f"{g['ack_p50_ms']:.1f} ms, p99 {g['ack_p99_ms']:.1f} ms; server CPU "
                     f"{g.get('server_cpu_s', 0):.1f} s including the compaction after the run "
                     f"({g.get('server_cpu_s', 0) / max(g['events'], 1) * 1e6:.1f} us per event); server peak RSS "
                     f"{res['rss']['ours gRPC ingest'] / 2**20:.0f} MB, resident 45 s after the run "
                     f"{max(r.get('idle_rss', 0) for r in g.get('runs', [g])) / 2**20:.0f} MB (largest of the runs; "
                     f"settled within 5% of it {max(r.get('idle_settled_s', 0) for r in g.get('runs', [g]))} s after "
                     "the run at the latest). "
                     "The peers have no server to compare.\n")
        L.append("### Size at rest\n")
        L.append("| store | MB | bytes/event |")
        L.append("|---|---|---|")
        for k, b in res["size"].items():
            L.append(f"| {k} | {b / 1e6:.1f} | {b / n:.1f} |")
        best = min(res["size"][k] for k in ["duckdb", "chdb"])
        L.append(f"\nSize ours / best peer: **{res['size']['ours'] / best:.2f}x**; ours / Parquet-zstd: "
                 f"**{res['size']['ours'] / res['size']['parquet-zstd']:.2f}x**.\n")
        L.append(f"### Queries ({ARGS.reps} timed runs each after {ARGS.warmup} warm-up)\n")
        L.append("| query | rows | ours median (p99) ms | ours in the server median (p99) ms | DuckDB median (p99) ms "
                 "| chDB median (p99) ms | ours / best peer | answers |")
        L.append("|---|---|---|---|---|---|---|---|")
        for q in res["queries"]:
            s = q["stats"]
            best = min(s["duckdb"]["median"], s["chdb"]["median"])
            check = "match" if not q["mismatch"] else "**MISMATCH** " + "; ".join(f"{k}: {v}" for k, v in q["mismatch"].items())
            srv = s.get("ours server", {"median": float("nan"), "p99": float("nan")})
            L.append(f"| {q['name']} | {q['rows']} | {s['ours']['median']:.2f} ({s['ours']['p99']:.2f}) | "
                     f"{srv['median']:.2f} ({srv['p99']:.2f}) | "
                     f"{s['duckdb']['median']:.2f} ({s['duckdb']['p99']:.2f}) | {s['chdb']['median']:.2f} "
                     f"({s['chdb']['p99']:.2f}) | {s['ours']['median'] / best:.2f}x | {check} |")
        L.append("\n| peak RSS | MB |")
        L.append("|---|---|")
        for k, b in res["rss"].items():
            L.append(f"| {k} | {b / 2**20:.0f} |")
        L.append("")
        for f in imgs:
            if f.endswith(f"-{n}.png"):
                L.append(f"![{f}]({f})")
        L.append("")
        L.append("<details><summary>Query texts and parameters</summary>\n")
        L.append(f"Parameters drawn from the data: `{json.dumps(res['params'])}`\n")
        for q in res["queries"]:
            L.append(f"- {q['name']}")
            for e, sql in q["sql"].items():
                L.append(f"  - {e}: `{sql}`")
        L.append("\n</details>\n")
    with open(os.path.join(out_dir, "REPORT.md"), "w") as f:
        f.write("\n".join(L) + "\n")
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=1)


def main():
    global ARGS
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        return worker(sys.argv[2], sys.argv[3])
    if len(sys.argv) > 1 and sys.argv[1] == "load-duckdb":
        return load_duckdb(sys.argv[2], sys.argv[3])
    if len(sys.argv) > 1 and sys.argv[1] == "export-parquet":
        return export_parquet(sys.argv[2], sys.argv[3])
    if len(sys.argv) > 1 and sys.argv[1] == "load-chdb":
        return load_chdb(sys.argv[2], sys.argv[3])
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bin-dir", required=True)
    ap.add_argument("--sizes", default="100000,1000000")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--ingest-reps", type=int, default=3)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--smoke", action="store_true", help="10k events, few runs, fail on any answer mismatch")
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "benchmarks"))
    ap.add_argument("--data", default=os.path.join(ROOT, "target", "bench-data"))
    ARGS = ap.parse_args()
    if ARGS.smoke:
        ARGS.sizes, ARGS.reps, ARGS.warmup, ARGS.ingest_reps = "10000", 3, 1, 1
        ARGS.out = os.path.join(ROOT, "target", "bench-smoke")
    os.makedirs(ARGS.data, exist_ok=True)
    started = dt.datetime.now(dt.timezone.utc)
    results = []
    for n in [int(x) for x in ARGS.sizes.split(",") if x]:
        work = os.path.join(ROOT, "target", "bench-work", str(n))
        os.makedirs(work, exist_ok=True)
        results.append(bench_size(ARGS, n, work))
    report(results, ARGS.out, started)
    print(f"\nreport: {os.path.join(ARGS.out, 'REPORT.md')}")
    bad = [(r["events"], q["name"]) for r in results for q in r["queries"] if q["mismatch"]]
    if bad:
        print(f"ANSWER MISMATCHES: {bad}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main() or 0)
