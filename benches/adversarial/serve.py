"""The adversarial events through a running server instead of `activemirror import`: start
`BIN start` on a fresh data directory with a small buffer, frequent flushes, compaction after
two hot segments and the cold tier after one second (so the events end up spread over the
buffer, hot segments, warm segments and Parquet archives, and move between them while the
checks run), POST them to `/v1/events` in batches of varying size (JSON arrays and NDJSON
alternately; first the events of more than a day ago, so that they reach the cold tier; the
server is killed with SIGKILL and restarted halfway through the rest), then leave the server running for rows.py and compare.py, which query it with
`activemirror sql --server`.

Usage: serve.py BIN WORK_DIR EVENTS.jsonl. Prints the server's URL on its last line; the
server's pid is in WORK_DIR/server.pid and its log in WORK_DIR/server.log."""
import http.client, json, os, random, socket, subprocess, sys, time
from timestamps import event_ns

BIN, WORK, SRC = sys.argv[1], sys.argv[2], sys.argv[3]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


os.makedirs(WORK, exist_ok=True)
http_port, grpc_port = free_port(), free_port()
config = os.path.join(WORK, "activemirror.yaml")
with open(config, "w") as f:
    f.write(
        "storage:\n  max_buffered_mb: 4\n  flush_interval: 300ms\n  compaction_trigger: 2\n"
        "retention:\n  archive_after: 1s\n"
        "query:\n  max_results: 100000000\n  timeout: 600s\n"
    )
log = open(os.path.join(WORK, "server.log"), "ab")


def start():
    p = subprocess.Popen(
        [BIN, "start", "--config", config, "--data-dir", os.path.join(WORK, "data"),
         "--http-addr", f"127.0.0.1:{http_port}", "--grpc-addr", f"127.0.0.1:{grpc_port}"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    with open(os.path.join(WORK, "server.pid"), "w") as f:
        f.write(str(p.pid))
    return p


server = start()


def connect():
    for _ in range(300):
        if server.poll() is not None:
            sys.exit(f"the server exited with {server.returncode}; see {WORK}/server.log")
        try:
            c = http.client.HTTPConnection("127.0.0.1", http_port, timeout=120)
            c.request("GET", "/healthz")
            c.getresponse().read()
            return c
        except OSError:
            time.sleep(0.1)
    sys.exit("the server did not answer /healthz within 30 s")


c = connect()
lines = [line.rstrip("\n") for line in open(SRC, encoding="utf-8") if line.strip()]
r = random.Random(len(lines))
sent, batches = 0, 0


def post(lines):
    global sent, batches
    i = 0
    while i < len(lines):
        n = r.choice([1, 7, 50, 200, 1000])
        chunk = lines[i:i + n]
        if batches % 2:
            body, ctype = "\n".join(chunk) + "\n", "application/x-ndjson"
        else:
            body, ctype = "[" + ",".join(chunk) + "]", "application/json"
        c.request("POST", "/v1/events", body=body.encode("utf-8"), headers={"content-type": ctype})
        resp = c.getresponse()
        answer = resp.read()
        if resp.status != 200:
            sys.exit(f"batch {batches + 1}: HTTP {resp.status}: {answer[:500]!r}")
        accepted = json.loads(answer)["accepted"]
        if accepted != len(chunk):
            sys.exit(f"batch {batches + 1}: accepted {accepted} of {len(chunk)}")
        sent += accepted
        batches += 1
        i += n
        if batches % 10 == 0:
            time.sleep(0.35)  # let a flush (and now and then a compaction) happen between batches


# First the events of more than a day ago, which end up in the cold tier once compacted
# (`archive_after: 1s`, by their newest event), then the rest (up to 2055), which stay warm,
# hot or buffered.
day_ago = (time.time() - 86400) * 10**9
is_old = [event_ns(json.loads(line)) < day_ago for line in lines]
old = [line for line, o in zip(lines, is_old) if o]
recent = [line for line, o in zip(lines, is_old) if not o]
post(old)
archive = os.path.join(WORK, "data", "archive")
deadline = time.time() + 30
while time.time() < deadline and not any(files for _, _, files in os.walk(archive)):
    time.sleep(0.2)
archived = sum(len(files) for _, _, files in os.walk(archive))
# SIGKILL in the middle: what was acknowledged must come back exactly once (WAL replay of
# whatever was not yet in segments), and the rest goes to the restarted server.
half = len(recent) // 2
post(recent[:half])
server.kill()
server.wait()
server = start()
c = connect()
post(recent[half:])
print(f"posted {sent} events in {batches} batches to 127.0.0.1:{http_port} "
      f"({len(old)} old ones first: {archived} archive files then)", file=sys.stderr)
print(f"http://127.0.0.1:{http_port}")
