//! Shared by the end-to-end tests: start the real `activemirror` binary on ephemeral ports with
//! a temp data dir, and small HTTP helpers.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

pub struct Server {
    pub child: Child,
    /// `http://127.0.0.1:port` of the HTTP API.
    pub base: String,
    /// `http://127.0.0.1:port` of the gRPC port.
    pub grpc: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn start(dir: &std::path::Path) -> Server {
    start_with(dir, &[])
}

/// Starts the server with extra flags / environment (`KEY=VALUE` items are set as environment).
pub fn start_with(dir: &std::path::Path, extra: &[&str]) -> Server {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_activemirror"));
    cmd.args(["start", "--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0", "--data-dir"]).arg(dir);
    for x in extra {
        match x.split_once('=') {
            Some((k, v)) if !k.starts_with('-') => {
                cmd.env(k, v);
            }
            _ => {
                cmd.arg(x);
            }
        }
    }
    let mut child =
        cmd.env("RUST_LOG", "info").stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("spawn server");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let addr_of =
        |line: &str| line.split("addr=").nth(1).expect("addr").split_whitespace().next().expect("addr").to_owned();
    let (mut http, mut grpc) = (None, None);
    while http.is_none() || grpc.is_none() {
        let line = lines.next().expect("server exited before listening").expect("read");
        if line.contains("HTTP listening") {
            http = Some(addr_of(&line));
        } else if line.contains("gRPC listening") {
            grpc = Some(addr_of(&line));
        }
    }
    // Keep draining logs so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Server {
        child,
        base: format!("http://{}", http.unwrap_or_default()),
        grpc: format!("http://{}", grpc.unwrap_or_default()),
    }
}

pub fn post(url: &str, body: &str) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let mut r = agent.post(url).send(body).expect("request");
    (r.status().as_u16(), r.body_mut().read_to_string().expect("body"))
}

/// Runs SQL over `/v1/sql` and returns the JSON rows.
pub fn sql(base: &str, tenant: Option<&str>, query: &str) -> Vec<serde_json::Value> {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let mut req = agent.post(&format!("{base}/v1/sql"));
    if let Some(t) = tenant {
        req = req.header("x-tenant", t);
    }
    let mut r = req.send(serde_json::json!({ "sql": query }).to_string()).expect("sql");
    let status = r.status().as_u16();
    let body = r.body_mut().read_to_string().expect("body");
    assert_eq!(status, 200, "{query}: {body}");
    match serde_json::from_str(&body).expect("json") {
        serde_json::Value::Array(rows) => rows,
        other => panic!("expected rows, got {other}"),
    }
}

pub fn count(base: &str, tenant: Option<&str>) -> u64 {
    sql(base, tenant, "SELECT count(*) AS n FROM events")[0]["n"].as_u64().expect("n")
}

pub fn metrics(base: &str) -> String {
    let mut r = ureq::get(&format!("{base}/metrics")).call().expect("metrics");
    r.body_mut().read_to_string().expect("body")
}
