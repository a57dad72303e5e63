//! A seeded generator of realistic AI-agent traffic for benchmarks and tests.
//!
//! Tenants and agents are skewed (Zipf-like), traces run a few to dozens of steps in the
//! order agents really take them (thought, llm_call, tool_call, observation, output), text is
//! 20 to 2000 characters of Zipf-distributed vocabulary mixed with ids, numbers and JSON
//! arguments (so it compresses like real logs, not like filler), a few percent of steps fail,
//! and confidence is mostly high.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use segments::{Event, Text};

const WORDS: &[&str] = &[
    "the",
    "to",
    "and",
    "a",
    "of",
    "you",
    "your",
    "for",
    "is",
    "in",
    "order",
    "I",
    "we",
    "this",
    "that",
    "it",
    "customer",
    "with",
    "on",
    "be",
    "can",
    "please",
    "will",
    "have",
    "not",
    "are",
    "refund",
    "account",
    "payment",
    "request",
    "status",
    "check",
    "let",
    "me",
    "tool",
    "result",
    "found",
    "policy",
    "shipping",
    "delivery",
    "subscription",
    "invoice",
    "plan",
    "user",
    "help",
    "issue",
    "error",
    "retry",
    "should",
    "need",
    "would",
    "could",
    "because",
    "if",
    "then",
    "next",
    "step",
    "data",
    "returned",
    "available",
    "unavailable",
    "process",
    "processing",
    "processed",
    "days",
    "business",
    "within",
    "eligible",
    "ineligible",
    "amount",
    "credit",
    "card",
    "billing",
    "address",
    "email",
    "confirm",
    "confirmed",
    "thanks",
    "sorry",
    "apologize",
    "inconvenience",
    "ticket",
    "escalate",
    "human",
    "agent",
    "search",
    "knowledge",
    "base",
    "article",
    "document",
    "relevant",
    "query",
    "response",
    "answer",
    "question",
    "information",
    "details",
    "product",
    "item",
    "warehouse",
    "stock",
    "backorder",
    "tracking",
    "number",
    "carrier",
    "package",
    "delivered",
    "expected",
    "date",
    "time",
    "today",
    "tomorrow",
    "week",
    "month",
    "cancel",
    "cancellation",
    "upgrade",
    "downgrade",
    "price",
    "discount",
    "coupon",
    "code",
    "applied",
    "total",
    "tax",
    "currency",
    "exchange",
    "return",
    "label",
    "reason",
    "damaged",
    "missing",
    "wrong",
    "size",
    "color",
    "replacement",
    "approve",
    "approved",
    "denied",
    "review",
    "manual",
    "automatic",
    "threshold",
    "limit",
    "exceeded",
    "timeout",
    "latency",
    "service",
    "endpoint",
    "api",
    "database",
    "record",
    "update",
    "updated",
    "create",
    "created",
    "delete",
    "deleted",
    "lookup",
    "fetch",
    "call",
    "function",
    "arguments",
    "parameters",
    "output",
    "input",
    "context",
    "summary",
    "summarize",
    "classify",
    "intent",
    "confidence",
    "high",
    "low",
    "medium",
    "likely",
    "unlikely",
    "based",
    "on",
    "history",
    "previous",
    "prior",
    "conversation",
    "session",
    "message",
    "reply",
    "draft",
    "final",
    "send",
    "sent",
    "received",
    "pending",
    "complete",
    "completed",
    "failed",
    "success",
    "successful",
    "warning",
    "note",
    "also",
    "however",
    "first",
    "second",
    "finally",
    "so",
    "but",
    "or",
    "as",
    "at",
    "by",
    "from",
    "an",
    "all",
    "any",
    "some",
    "more",
    "most",
    "no",
    "yes",
    "ok",
    "what",
    "which",
    "when",
    "where",
    "who",
    "how",
    "why",
    "there",
    "their",
    "they",
    "them",
];

const TENANTS: &[&str] = &["acme", "initech", "globex", "umbrella", "hooli", "stark", "wayne", "cyberdyne"];
const INTENTS: &[&str] = &[
    "order_status",
    "refund",
    "billing",
    "cancel_subscription",
    "technical_support",
    "shipping",
    "account_access",
    "product_question",
    "complaint",
    "upgrade",
];
const MODELS: &[&str] =
    &["gpt-4o-mini", "gpt-4o", "claude-3-5-sonnet", "claude-3-haiku", "llama-3.1-70b", "gemini-1.5-pro"];
const TOOLS: &[&str] = &[
    "get_order",
    "get_customer",
    "search_kb",
    "issue_refund",
    "update_subscription",
    "create_ticket",
    "send_email",
    "lookup_tracking",
    "check_inventory",
    "apply_coupon",
];
const ERRORS: &[&str] = &[
    "TimeoutError: upstream did not respond within 30000 ms",
    "RateLimitError: 429 Too Many Requests",
    "ToolError: order not found",
    "OutputGuardrailError: response blocked by policy filter",
    "ValidationError: missing required argument customer_id",
    "ConnectionResetError: connection reset by peer",
];
const ATTR_KEYS: &[&str] =
    &["env", "channel", "locale", "prompt_version", "experiment", "retry", "user.hash", "region"];

/// Zipf-like pick: index i with weight 1/(i+1)^s.
fn zipf(rng: &mut StdRng, n: usize, s: f64) -> usize {
    let total: f64 = (1..=n).map(|k| 1.0 / (k as f64).powf(s)).sum();
    let mut x = rng.random::<f64>() * total;
    for k in 1..=n {
        x -= 1.0 / (k as f64).powf(s);
        if x <= 0.0 {
            return k - 1;
        }
    }
    n - 1
}

/// The seeded event generator.
pub struct Generator {
    rng: StdRng,
    clock_ns: i64,
    pending: std::collections::VecDeque<Event>,
    word_weights: Vec<f64>,
}

impl std::fmt::Debug for Generator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generator").field("clock_ns", &self.clock_ns).finish()
    }
}

impl Generator {
    pub fn new(seed: u64) -> Self {
        let mut cum = 0.0;
        let word_weights = (1..=WORDS.len())
            .map(|k| {
                cum += 1.0 / (k as f64).powf(1.05);
                cum
            })
            .collect();
        Generator {
            rng: StdRng::seed_from_u64(seed),
            clock_ns: 1_748_736_000_000_000_000, // 2025-06-01
            pending: Default::default(),
            word_weights,
        }
    }

    fn word(&mut self) -> &'static str {
        let total = self.word_weights.last().copied().unwrap_or(1.0);
        let x = self.rng.random::<f64>() * total;
        let i = self.word_weights.partition_point(|w| *w < x);
        WORDS[i.min(WORDS.len() - 1)]
    }

    fn hexid(&mut self, n: usize) -> String {
        (0..n).map(|_| char::from(b"0123456789abcdef"[self.rng.random_range(0..16)])).collect()
    }

    fn sentence(&mut self) -> String {
        let n = self.rng.random_range(5..18);
        let mut s = String::new();
        for i in 0..n {
            if i > 0 {
                s.push(' ');
            }
            match self.rng.random_range(0..40) {
                0 => s.push_str(&format!("ORD-{}", self.rng.random_range(1_000_000..9_999_999))),
                1 => s.push_str(&format!("cus_{}", self.hexid(10))),
                2 => s.push_str(&format!("${}.{:02}", self.rng.random_range(1..500), self.rng.random_range(0..100))),
                3 => s.push_str(&format!("{}", self.rng.random_range(1..100))),
                _ => s.push_str(self.word()),
            }
        }
        s.push('.');
        s
    }

    fn text(&mut self, min: usize, max: usize) -> String {
        let target = self.rng.random_range(min..=max);
        let mut s = String::new();
        while s.len() < target {
            if !s.is_empty() {
                s.push(' ');
            }
            s.push_str(&self.sentence());
        }
        s.truncate(target.max(min));
        while !s.is_char_boundary(s.len()) {
            s.pop();
        }
        s
    }

    /// Generate one whole trace into the pending queue.
    fn trace(&mut self) {
        let tenant = TENANTS[zipf(&mut self.rng, TENANTS.len(), 1.1)];
        let agent_no = zipf(&mut self.rng, 40, 1.0);
        let agent = format!("{}-agent-{agent_no:03}", ["support", "coding", "sales", "research"][agent_no % 4]);
        let intent = INTENTS[zipf(&mut self.rng, INTENTS.len(), 0.9)];
        let model = MODELS[zipf(&mut self.rng, MODELS.len(), 1.2)];
        let mut trace_id = [0u8; 16];
        self.rng.fill(&mut trace_id[..]);
        let session = format!("sess_{}", self.hexid(16));
        let steps = 3 + zipf(&mut self.rng, 40, 0.7);
        let mut t = self.clock_ns;
        let root: [u8; 8] = self.rng.random();
        let mut parent = root;
        let failing = self.rng.random::<f64>() < 0.06;
        for step in 0..steps {
            let kind = if step == 0 {
                "thought"
            } else if step == steps - 1 {
                "output"
            } else {
                ["llm_call", "action", "tool_call", "observation", "thought"][(step - 1) % 5]
            };
            let span_id: [u8; 8] = if step == 0 { root } else { self.rng.random() };
            let tool = TOOLS[self.rng.random_range(0..TOOLS.len())];
            let content = match kind {
                "llm_call" => format!("system: You are a helpful assistant for {tenant}. user: {}", self.text(40, 1800)),
                "tool_call" => format!(
                    "POST /api/v2/{tool} {{\"request_id\": \"req_{}\", \"customer_id\": \"cus_{}\", \"timeout_ms\": 30000}}",
                    self.hexid(12),
                    self.hexid(10)
                ),
                "action" => format!("Calling {tool} because {}", self.text(20, 200)),
                "observation" => format!("{tool} returned: {}", self.text(20, 1200)),
                "output" => self.text(60, 2000),
                _ => format!("Let me think step by step. {}", self.text(20, 600)),
            };
            let is_error = failing && step == steps - 1 || self.rng.random::<f64>() < 0.02;
            let dur = match kind {
                "llm_call" => 200.0 + self.rng.random::<f64>() * 3000.0,
                "tool_call" => 5.0 + self.rng.random::<f64>() * 400.0,
                _ => self.rng.random::<f64>() * 20.0,
            };
            let llm = kind == "llm_call";
            let input_tokens = llm.then(|| self.rng.random_range(100..8000i64));
            let output_tokens = llm.then(|| self.rng.random_range(10..1500i64));
            let cost = input_tokens.zip(output_tokens).map(|(i, o)| (i as f64 * 1.5e-7 + o as f64 * 6e-7) * 1e7);
            let conf = (1.0 - (self.rng.random::<f64>().powi(3)) * 0.9).clamp(0.0, 1.0);
            let mut attributes: Vec<(Text, Text)> = Vec::new();
            for _ in 0..self.rng.random_range(0..4) {
                let k = ATTR_KEYS[self.rng.random_range(0..ATTR_KEYS.len())];
                let v = match k {
                    "env" => Text::from(["prod", "staging"][self.rng.random_range(0..2)]),
                    "user.hash" => Text::from(self.hexid(8)),
                    "retry" => Text::from(self.rng.random_range(0..3).to_string()),
                    _ => Text::from(format!("{k}-{}", self.rng.random_range(0..20))),
                };
                attributes.push((Text::from(k), v));
            }
            attributes.sort();
            attributes.dedup_by(|a, b| a.0 == b.0);
            self.pending.push_back(Event {
                tenant: Text::from(tenant),
                trace_id,
                span_id,
                parent_span_id: (step > 0).then_some(parent),
                agent_id: Text::from(agent.as_str()),
                session_id: Some(Text::from(session.as_str())),
                timestamp_ns: t,
                kind: Text::from(kind),
                name: Some(Text::from(if llm { model } else { tool })),
                content: Some(content),
                intent: (kind != "tool_call" && kind != "observation").then(|| Text::from(intent)),
                confidence: (kind != "tool_call" && kind != "observation")
                    .then_some((conf * 10_000.0).round() / 10_000.0),
                duration_ms: Some((dur * 1000.0).round() / 1000.0),
                status: Text::from(if is_error { "error" } else { "ok" }),
                error_message: is_error.then(|| ERRORS[self.rng.random_range(0..ERRORS.len())].to_owned()),
                model: (llm || kind == "thought").then(|| Text::from(model)),
                input_tokens,
                output_tokens,
                cost_usd: cost.map(|c| c.round() / 1e7),
                attributes,
            });
            if kind == "action" || step == 0 {
                parent = span_id;
            }
            t += (dur * 1_000_000.0) as i64 + self.rng.random_range(1_000_000..50_000_000);
        }
        // Traces overlap in time: the next one starts a little later than this one did.
        self.clock_ns += self.rng.random_range(10_000_000..200_000_000);
    }

    /// Render an event as one JSON line in the contract's shape.
    pub fn json_line(e: &Event) -> String {
        let hex = engine::validate::hex;
        let ts = chrono_free_rfc3339(e.timestamp_ns);
        let v = serde_json::json!({
            "tenant": e.tenant, "trace_id": hex(&e.trace_id), "span_id": hex(&e.span_id),
            "parent_span_id": e.parent_span_id.map(|p| hex(&p)), "agent_id": e.agent_id,
            "session_id": e.session_id, "timestamp": ts, "timestamp_ns": e.timestamp_ns, "kind": e.kind,
            "name": e.name, "content": e.content, "intent": e.intent, "confidence": e.confidence,
            "duration_ms": e.duration_ms, "status": e.status, "error_message": e.error_message, "model": e.model,
            "input_tokens": e.input_tokens, "output_tokens": e.output_tokens, "cost_usd": e.cost_usd,
            "attributes": e.attributes.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
        });
        v.to_string()
    }
}

/// RFC 3339 in UTC with nanoseconds, without pulling a date library into the generator.
pub fn chrono_free_rfc3339(ns: i64) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    let nanos = ns.rem_euclid(1_000_000_000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = segments::civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{nanos:09}Z", sod / 3600, sod % 3600 / 60, sod % 60)
}

impl Iterator for Generator {
    type Item = Event;
    fn next(&mut self) -> Option<Event> {
        // Interleave a few concurrent traces so arrival order is not trace order.
        while self.pending.len() < 64 {
            self.trace();
        }
        let i = self.rng.random_range(0..self.pending.len().min(8));
        self.pending.remove(i)
    }
}

/// CPU seconds (user + system) this process has used so far, from `/proc/self/stat` (clock
/// ticks of 10 ms; 0 where it cannot be read).
pub fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesized command name; utime and stime are fields 14 and 15.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let ticks: f64 = after.split_whitespace().skip(11).take(2).filter_map(|v| v.parse::<f64>().ok()).sum();
    ticks / 100.0
}

/// The median of `v` (sorted in place); NaN if empty.
pub fn median(v: &mut [f64]) -> f64 {
    percentile(v, 0.5)
}

/// The `p` quantile of `v` (sorted in place), nearest rank; NaN if empty.
pub fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    let at = ((v.len() as f64 * p).ceil() as usize).saturating_sub(1);
    v.get(at.min(v.len().saturating_sub(1))).copied().unwrap_or(f64::NAN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_events_are_valid_contract_json() {
        for (i, e) in Generator::new(7).take(2000).enumerate() {
            let line = Generator::json_line(&e);
            let back = engine::parse_event(&line, i).expect("generator output validates");
            assert_eq!(back, e);
        }
    }

    #[test]
    fn generator_is_seeded_and_varied() {
        let a: Vec<Event> = Generator::new(1).take(500).collect();
        let b: Vec<Event> = Generator::new(1).take(500).collect();
        assert_eq!(a, b);
        let tenants: std::collections::HashSet<_> = a.iter().map(|e| &e.tenant).collect();
        assert!(tenants.len() >= 3);
        let errors = a.iter().filter(|e| e.status == "error").count();
        assert!(errors > 0 && errors < 100, "{errors}");
        let lens: Vec<usize> = a.iter().filter_map(|e| e.content.as_ref().map(String::len)).collect();
        assert!(lens.iter().any(|l| *l > 1000) && lens.iter().any(|l| *l < 200));
    }

    #[test]
    fn rfc3339_matches_the_validator() {
        for ns in [0i64, 1_748_910_742_997_035_000, -1, 951_782_400_000_000_000] {
            let s = chrono_free_rfc3339(ns);
            assert_eq!(engine::validate::parse_rfc3339(&s).expect("parse").0, ns, "{s}");
        }
    }
}
